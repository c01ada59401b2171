// Package schemas embeds the JSON Schemas of sluice's events and the data contracts of its
// pipelines, so every service validates against the same files that document them.
package schemas

import "embed"

// Events holds events/<kind>.json and the shared events/run.json.
//
//go:embed events/*.json
var Events embed.FS

// Contracts holds contracts/<name>.json, the built-in data contracts.
//
//go:embed contracts/*.json
var Contracts embed.FS

// EventBaseURL is the base of every event schema's $id.
const EventBaseURL = "https://schemas.sluice.invalid/events/"
