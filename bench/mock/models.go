package mock

import "strings"

// model is one entry of GET /v1/models.
type model struct {
	id          string // dated id, as the API answers it
	displayName string
	createdAt   string // RFC 3339
}

// models lists what GET /v1/models answers, newest first, like the API.
var models = []model{
	{"claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-01T00:00:00Z"},
	{"claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"},
	{"claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"},
	{"claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"},
	{"claude-opus-4-20250514", "Claude Opus 4", "2025-05-14T00:00:00Z"},
	{"claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-14T00:00:00Z"},
	{"claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-19T00:00:00Z"},
	{"claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z"},
	{"claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z"},
}

// aliases maps the model aliases the API accepts to the dated id it answers with. A proxy
// prices by the answered id, so tests need the mock to answer exactly as the API does.
var aliases = map[string]string{
	"claude-opus-4-5":          "claude-opus-4-5-20251101",
	"claude-haiku-4-5":         "claude-haiku-4-5-20251001",
	"claude-sonnet-4-5":        "claude-sonnet-4-5-20250929",
	"claude-opus-4-1":          "claude-opus-4-1-20250805",
	"claude-opus-4-0":          "claude-opus-4-20250514",
	"claude-sonnet-4-0":        "claude-sonnet-4-20250514",
	"claude-sonnet-4":          "claude-sonnet-4-20250514",
	"claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
	"claude-3-5-haiku-latest":  "claude-3-5-haiku-20241022",
	"claude-3-haiku":           "claude-3-haiku-20240307",
	// From Opus 4.6 on, models have no dated snapshot: the API answers with the id asked for.
	// Listed anyway so the mock's answer for every current model is deliberate, not a fallback.
	"claude-opus-5-5":       "claude-opus-5-5",
	"claude-opus-5":         "claude-opus-5",
	"claude-opus-4-8":       "claude-opus-4-8",
	"claude-opus-4-7":       "claude-opus-4-7",
	"claude-opus-4-6":       "claude-opus-4-6",
	"claude-sonnet-5-5":     "claude-sonnet-5-5",
	"claude-sonnet-5":       "claude-sonnet-5",
	"claude-sonnet-4-6":     "claude-sonnet-4-6",
	"claude-haiku-5-5":      "claude-haiku-5-5",
	"claude-fable-5-2":      "claude-fable-5-2",
	"claude-fable-5-1":      "claude-fable-5-1",
	"claude-fable-5":        "claude-fable-5",
	"claude-mythos-5-2":     "claude-mythos-5-2",
	"claude-mythos-5-1":     "claude-mythos-5-1",
	"claude-mythos-5":       "claude-mythos-5",
	"claude-mythos-preview": "claude-mythos-preview",
}

// answeredModel returns the model id a response carries for a requested model: the dated id
// of a known alias, anything else (dated ids, unknown names) echoed as is, so a proxy's
// handling of models the mock does not know can still be tested.
func answeredModel(requested string) string {
	if id, ok := aliases[requested]; ok {
		return id
	}
	return strings.Clone(requested)
}
