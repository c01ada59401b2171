package check

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

var requiredVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*):\?`)

// LoadCompose loads a compose file with compose-go, as `docker compose config` does: schema
// validation, interpolation, anchors and merges, every profile. Variables the file requires
// (${X:?...}) get a placeholder, since their values are the operator's secrets.
func LoadCompose(ctx context.Context, file string) (*types.Project, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, m := range requiredVar.FindAllStringSubmatch(string(b), -1) {
		env = append(env, m[1]+"=placeholder")
	}
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithEnv(env),
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(ctx)
}

// ComposeService is a compose service in the shape the Kubernetes policies read (kind
// ComposeService, or ComposeJob for a one-shot service: restart "no" or only in a profile;
// spec = a pod spec with one container), so the same rules judge both.
// builtFrom is the Dockerfile of a service built from source ("" for a pulled image).
type ComposeService struct {
	Doc       map[string]any
	BuiltFrom string
}

// ComposeServices converts every service of p. A service built here runs as its Dockerfile's
// last USER unless compose sets user:, so that is where its user is read from.
func ComposeServices(p *types.Project) ([]ComposeService, error) {
	var names []string
	for name := range p.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []ComposeService
	for _, name := range names {
		s := p.Services[name]
		user, dockerfile := s.User, ""
		if s.Build != nil {
			dockerfile = s.Build.Dockerfile
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(s.Build.Context, dockerfile)
			}
			if user == "" {
				u, err := dockerfileUser(dockerfile, s.Build.Target)
				if err != nil {
					return nil, fmt.Errorf("service %s: %w", name, err)
				}
				user = u
			}
		}
		sc := map[string]any{
			"runAsNonRoot":             user != "" && !rootUser(user),
			"readOnlyRootFilesystem":   s.ReadOnly,
			"allowPrivilegeEscalation": !contains(s.SecurityOpt, "no-new-privileges:true") && !contains(s.SecurityOpt, "no-new-privileges"),
			"privileged":               s.Privileged,
			"capabilities":             map[string]any{"drop": strs(s.CapDrop), "add": strs(s.CapAdd)},
		}
		if !contains(s.SecurityOpt, "seccomp:unconfined") && !contains(s.SecurityOpt, "seccomp=unconfined") {
			// Docker applies its default seccomp profile unless told otherwise.
			sc["seccompProfile"] = map[string]any{"type": "RuntimeDefault"}
		}
		c := map[string]any{"name": name, "image": s.Image, "securityContext": sc}
		limits := map[string]any{}
		if s.Deploy != nil && s.Deploy.Resources.Limits != nil {
			if l := s.Deploy.Resources.Limits; l.NanoCPUs > 0 {
				limits["cpu"] = fmt.Sprint(l.NanoCPUs.Value())
			}
			if l := s.Deploy.Resources.Limits; l.MemoryBytes > 0 {
				limits["memory"] = fmt.Sprint(int64(l.MemoryBytes))
			}
		}
		if s.CPUS > 0 {
			limits["cpu"] = fmt.Sprint(s.CPUS)
		}
		if s.MemLimit > 0 {
			limits["memory"] = fmt.Sprint(int64(s.MemLimit))
		}
		c["resources"] = map[string]any{"limits": limits}
		if s.HealthCheck != nil && !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 0 {
			c["livenessProbe"] = map[string]any{"exec": map[string]any{"command": []string(s.HealthCheck.Test)}}
			c["readinessProbe"] = c["livenessProbe"]
		}
		kind := "ComposeService"
		if s.Restart == "no" || len(s.Profiles) > 0 {
			kind = "ComposeJob"
		}
		out = append(out, ComposeService{
			BuiltFrom: dockerfile,
			Doc: map[string]any{
				"kind":     kind,
				"metadata": map[string]any{"name": name},
				"spec":     map[string]any{"containers": []any{c}},
			},
		})
	}
	return out, nil
}

// dockerfileUser is the argument of the last USER instruction in effect at the end of a
// Dockerfile's target stage (the last stage when target is ""), following a stage built FROM an
// earlier one; "" if none: root.
func dockerfileUser(file, target string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	users := map[string]string{} // a finished stage's user, by its name
	user, stage := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && strings.EqualFold(fields[0], "USER") {
			user = fields[1]
		}
		if len(fields) >= 2 && strings.EqualFold(fields[0], "FROM") {
			if stage != "" {
				users[stage] = user
			}
			if target != "" && strings.EqualFold(stage, target) {
				return user, nil
			}
			user, stage = users[strings.ToLower(fields[1])], "" // each stage starts as root, or as the stage it is built on
			if len(fields) >= 4 && strings.EqualFold(fields[2], "AS") {
				stage = strings.ToLower(fields[3])
			}
		}
	}
	if target != "" && !strings.EqualFold(stage, target) {
		return "", fmt.Errorf("%s has no stage %s", file, target)
	}
	return user, sc.Err()
}

func rootUser(u string) bool {
	name := strings.SplitN(u, ":", 2)[0]
	return name == "0" || name == "root"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func strs(s []string) []any {
	out := []any{}
	for _, x := range s {
		out = append(out, x)
	}
	return out
}
