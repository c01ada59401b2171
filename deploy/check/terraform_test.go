package check

import (
	"context"

	"github.com/hashicorp/hcl/v2/hclparse"
	"strings"
	"testing"
)

func loadTF(t *testing.T, elem ...string) *TFConfig {
	t.Helper()
	cfg, err := LoadTerraform(path(t, elem...))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Every .tf file parses with hcl/v2 and is laid out as `terraform fmt` / `tofu fmt` would.
func TestTerraformParsesAndIsFormatted(t *testing.T) {
	for _, dir := range [][]string{{"deploy", "terraform"}, {"deploy", "policy", "testdata", "terraform"}, {"deploy", "check", "testdata", "wiring"}} {
		cfg := loadTF(t, dir...)
		if len(cfg.Files) == 0 {
			t.Fatalf("%s: no Terraform files", strings.Join(dir, "/"))
		}
		bad, err := Unformatted(cfg.Root, cfg.Files)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range bad {
			t.Errorf("%s/%s is not formatted (hclwrite.Format; terraform fmt fixes it)", strings.Join(dir, "/"), f)
		}
	}
}

// The seed's Terratest, as Go over the parsed configuration: each module is called with every
// variable it needs and nothing else, every reference (outputs included) resolves.
func TestTerraformModuleWiring(t *testing.T) {
	cfg := loadTF(t, "deploy", "terraform")
	for _, p := range cfg.Wiring() {
		t.Error(p)
	}
	calls := map[string]bool{}
	for _, m := range cfg.Of(".", "module") {
		calls[m.Name] = true
	}
	for _, want := range []string{"s3", "postgres", "alerting", "metrics", "iam"} {
		if !calls[want] {
			t.Errorf("root module does not call module %q", want)
		}
	}
	if len(cfg.Of(".", "output")) == 0 {
		t.Error("root module has no outputs")
	}
}

// The wiring check catches the seed's bugs: an output reaching into a module's resource, a
// module argument the module does not declare, a variable left unset.
func TestTerraformWiringFindsSeedBugs(t *testing.T) {
	problems := strings.Join(loadTF(t, "deploy", "check", "testdata", "wiring").Wiring(), "\n")
	for _, want := range []string{
		`module.ec2_db.aws_instance.postgres.public_ip: module ec2_db (modules/ec2_db) has no output "aws_instance"`,
		`module "ec2_db" sets key_pair, which modules/ec2_db does not declare`,
		`module "ec2_db" does not set db_name`,
		`var.db_pasword: no variable db_pasword`,
	} {
		if !strings.Contains(problems, want) {
			t.Errorf("wiring problems lack %q; got:\n%s", want, problems)
		}
	}
}

// No variable without a type and a description, in any module; every root variable that is
// not a bool or a secret is validated.
func TestTerraformVariablesTypedDescribedValidated(t *testing.T) {
	cfg := loadTF(t, "deploy", "terraform")
	n := 0
	for _, v := range cfg.Blocks {
		if v.Kind != "variable" {
			continue
		}
		n++
		for _, attr := range []string{"type", "description"} {
			if _, ok := v.Config[attr]; !ok {
				t.Errorf("%s: variable %s has no %s", v.Pos(), v.Name, attr)
			}
		}
		if d, ok := v.Config["description"].(string); ok && strings.TrimSpace(d) == "" {
			t.Errorf("%s: variable %s has an empty description", v.Pos(), v.Name)
		}
		typ, _ := v.Config["type"].(map[string]any)
		if v.Module == "." && typ["expr"] != "bool" && v.Config["sensitive"] != true && v.Config["validation"] == nil {
			t.Errorf("%s: root variable %s has no validation block", v.Pos(), v.Name)
		}
	}
	if n < 10 {
		t.Fatalf("found %d variables; the parse lost some", n)
	}
}

// Our Terraform passes every Terraform policy.
func TestTerraformPolicies(t *testing.T) {
	cfg := loadTF(t, "deploy", "terraform")
	vs, err := policy(t, "sluice.terraform").Eval(context.Background(), cfg.PolicyInput())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		t.Error(v)
	}
}

// production.tfvars.example sets only root variables, and every one that has no default and
// is not a secret (secrets come from TF_VAR_ variables).
func TestTerraformExampleVariables(t *testing.T) {
	cfg := loadTF(t, "deploy", "terraform")
	f, diags := hclparse.NewParser().ParseHCLFile(path(t, "deploy", "terraform", "production.tfvars.example"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	attrs, diags := f.Body.JustAttributes()
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	declared := map[string]*TFBlock{}
	for _, v := range cfg.Of(".", "variable") {
		declared[v.Name] = v
	}
	for name, a := range attrs {
		if declared[name] == nil {
			t.Errorf("production.tfvars.example:%d: %s is not a root variable", a.Range.Start.Line, name)
		}
	}
	for name, v := range declared {
		_, hasDefault := v.Config["default"]
		if !hasDefault && v.Config["sensitive"] != true && attrs[name] == nil {
			t.Errorf("production.tfvars.example does not set %s (%s)", name, v.Pos())
		}
	}
}
