package check

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/rhysd/actionlint"
)

// LintWorkflows runs actionlint, as a library, on the workflow files of dir (.github/workflows):
// syntax, expressions and their types, job dependencies, runner labels, permission scopes,
// untrusted input in scripts, the inputs of popular actions. shellcheck and pyflakes run only
// if they are on PATH, as with the actionlint command.
func LintWorkflows(repoRoot string) ([]string, []string, error) {
	files, err := filepath.Glob(filepath.Join(repoRoot, ".github", "workflows", "*.yml"))
	if err != nil {
		return nil, nil, err
	}
	l, err := actionlint.NewLinter(io.Discard, &actionlint.LinterOptions{WorkingDir: repoRoot})
	if err != nil {
		return nil, nil, err
	}
	errs, err := l.LintFiles(files, nil)
	if err != nil {
		return nil, nil, err
	}
	var out []string
	for _, e := range errs {
		rel, _ := filepath.Rel(repoRoot, e.Filepath)
		out = append(out, fmt.Sprintf("%s:%d:%d: %s [%s]", rel, e.Line, e.Column, e.Message, e.Kind))
	}
	return files, out, nil
}

var applies = regexp.MustCompile(`terraform apply|kubectl apply|helm upgrade`)

var pinnedUses = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$`)

// WorkflowPolicy checks what actionlint leaves to the project: every action pinned to a full
// commit SHA (a tag can be moved), `permissions:` declared at the top of every workflow (the
// default token may write everything), and a job that applies Terraform or manifests runs in
// a (protected) environment.
func WorkflowPolicy(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	w, errs := actionlint.Parse(b)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %s", file, errs[0].Message)
	}
	name := filepath.Base(file)
	var out []string
	if w.Permissions == nil {
		out = append(out, fmt.Sprintf("%s: no top-level permissions: the token would get the repository's default scopes", name))
	}
	var ids []string
	for id := range w.Jobs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		job := w.Jobs[id]
		for _, s := range job.Steps {
			if r, ok := s.Exec.(*actionlint.ExecRun); ok && r.Run != nil && job.Environment == nil && applies.MatchString(r.Run.Value) {
				out = append(out, fmt.Sprintf("%s:%d: job %s changes production (%s) outside an environment", name, r.Run.Pos.Line, id, applies.FindString(r.Run.Value)))
			}
			a, ok := s.Exec.(*actionlint.ExecAction)
			if !ok || a.Uses == nil {
				continue
			}
			uses := a.Uses.Value
			if len(uses) > 2 && (uses[:2] == "./" || len(uses) > 9 && uses[:9] == "docker://") {
				continue
			}
			if !pinnedUses.MatchString(uses) {
				out = append(out, fmt.Sprintf("%s:%d: job %s uses %s: pin actions to a full commit SHA", name, a.Uses.Pos.Line, id, uses))
			}
		}
	}
	return out, nil
}
