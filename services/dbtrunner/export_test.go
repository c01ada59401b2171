package dbtrunner

import "time"

// WaitDocs waits for the docs of every run handled so far (they are published in the
// background).
func (r *Runner) WaitDocs() { r.docs.pending.Wait() }

// WorkerPID is the pid of the runner's warm dbt worker, 0 if none runs.
func (r *Runner) WorkerPID() int {
	if r.worker == nil {
		return 0
	}
	return r.worker.pid()
}

// DocsGrace is how long a test's Close waits for docs.
const DocsGrace = time.Minute
