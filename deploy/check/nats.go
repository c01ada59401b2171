package check

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/nats-io/nats-server/v2/conf"
	"sigs.k8s.io/yaml"
)

// NATSUser is one user of the NATS permission file: its name, the environment variable its
// password comes from, and its permissions as nats-server reads them.
type NATSUser struct {
	User        string         `json:"user"`
	PasswordVar string         `json:"-"`
	Password    string         `json:"password"`
	Permissions map[string]any `json:"permissions,omitempty"`
}

var confVar = regexp.MustCompile(`\$([A-Za-z_][A-Za-z0-9_]*)`)

// ParseNATSAuth reads deploy/nats/auth.conf with nats-server's own config parser. Each $VAR
// the file references is defined, for the parse, as a marker naming the variable, so the
// parsed password says which variable the server takes it from.
func ParseNATSAuth(file string) ([]NATSUser, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var defs strings.Builder
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, m := range confVar.FindAllStringSubmatch(line, -1) {
			// "$JS.API..." subjects are quoted strings, not references; only unquoted
			// password values are variables.
			if !seen[m[1]] && strings.Contains(line, "password") {
				seen[m[1]] = true
				fmt.Fprintf(&defs, "%s: \"<< $%s >>\"\n", m[1], m[1])
			}
		}
	}
	m, err := conf.Parse(defs.String() + string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	auth, _ := m["authorization"].(map[string]any)
	list, _ := auth["users"].([]any)
	if len(list) == 0 {
		return nil, fmt.Errorf("%s: no authorization { users = [...] }", file)
	}
	var users []NATSUser
	for _, u := range list {
		um, _ := u.(map[string]any)
		nu := NATSUser{User: fmt.Sprint(um["user"]), Password: fmt.Sprint(um["password"])}
		if v := strings.TrimSuffix(strings.TrimPrefix(nu.Password, "<< $"), " >>"); v != nu.Password {
			nu.PasswordVar = v
		} else {
			return nil, fmt.Errorf("%s: user %s: the password must be a $VARIABLE, not text", file, nu.User)
		}
		if p, ok := um["permissions"].(map[string]any); ok {
			nu.Permissions = p
		}
		users = append(users, nu)
	}
	return users, nil
}

// HelmAuthValues renders the NATS Helm chart values for users: the authorization block merged
// into the server config (passwords as << $VAR >>, which the chart writes unquoted, so the
// server reads them from its environment) and each variable from a Secret nats-user-<user>.
func HelmAuthValues(users []NATSUser) ([]byte, error) {
	env := map[string]any{}
	var list []any
	for _, u := range users {
		list = append(list, u)
		env[u.PasswordVar] = map[string]any{"valueFrom": map[string]any{"secretKeyRef": map[string]any{"name": "nats-user-" + u.User, "key": "password"}}}
	}
	values := map[string]any{
		"config":    map[string]any{"merge": map[string]any{"authorization": map[string]any{"users": list}}},
		"container": map[string]any{"env": env},
	}
	y, err := yaml.Marshal(values)
	if err != nil {
		return nil, err
	}
	head := "# Generated from deploy/nats/auth.conf (the one permission file) by deploy/check:\n" +
		"#   cd deploy/check && go test -run TestNATSHelmUsers -update\n" +
		"# Do not edit: TestNATSHelmUsers fails when this differs from auth.conf.\n"
	return append([]byte(head), y...), nil
}

// HelmUsers reads the users back from Helm values, in the same form as ParseNATSAuth.
func HelmUsers(values []byte) ([]NATSUser, error) {
	var v struct {
		Config struct {
			Merge struct {
				Authorization struct {
					Users []NATSUser `json:"users"`
				} `json:"authorization"`
			} `json:"merge"`
		} `json:"config"`
	}
	if err := yaml.Unmarshal(values, &v); err != nil {
		return nil, err
	}
	users := v.Config.Merge.Authorization.Users
	for i := range users {
		users[i].PasswordVar = strings.TrimSuffix(strings.TrimPrefix(users[i].Password, "<< $"), " >>")
	}
	return users, nil
}

// SameUsers compares two user lists by name, password variable and permissions.
func SameUsers(a, b []NATSUser) []string {
	index := func(us []NATSUser) map[string]NATSUser {
		m := map[string]NATSUser{}
		for _, u := range us {
			m[u.User] = u
		}
		return m
	}
	ma, mb := index(a), index(b)
	var diffs []string
	for name, ua := range ma {
		ub, ok := mb[name]
		switch {
		case !ok:
			diffs = append(diffs, "user "+name+" only in the permission file")
		case ua.PasswordVar != ub.PasswordVar:
			diffs = append(diffs, fmt.Sprintf("user %s: password from $%s vs $%s", name, ua.PasswordVar, ub.PasswordVar))
		case !reflect.DeepEqual(normalize(ua.Permissions), normalize(ub.Permissions)):
			diffs = append(diffs, "user "+name+": permissions differ")
		}
	}
	for name := range mb {
		if _, ok := ma[name]; !ok {
			diffs = append(diffs, "user "+name+" only in the Helm values")
		}
	}
	sort.Strings(diffs)
	return diffs
}

// normalize makes permissions comparable across parsers (YAML vs nats conf).
func normalize(p map[string]any) string {
	b, _ := yaml.Marshal(p)
	return string(bytes.TrimSpace(b))
}
