// Package flow is the plumbing every sluice service shares, written once: consume an event from
// a durable JetStream consumer, decode and schema-check it, continue the run's trace, call the
// step's handler, publish the next event with the same run id and trace, then ack; or nak with a
// delay (a deferrable wait or a retry), or fail the run with one `failed` event. It also keeps
// the run's lease alive while a handler works and records the run's state.
package flow
