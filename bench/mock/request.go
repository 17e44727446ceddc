package mock

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/tidwall/gjson"
)

// request is what the mock needs from a Messages (or count_tokens) body. Its strings never
// alias the body, which fasthttp reuses after the handler returns.
type request struct {
	model        string // the answered model id (dated for a known alias)
	maxTokens    int64
	stream       bool
	thinking     bool // the request enables extended thinking
	textBytes    int  // bytes of all system and message text, for the default input count
	directive    directive
	hasDirective bool
}

// maxTokensMax bounds max_tokens; the API's own bound is per model and far lower.
const maxTokensMax = 1e9

// apiError is an error answered in Anthropic's shape.
type apiError struct {
	status  int
	message string
}

func (e *apiError) Error() string { return e.message }

func invalid(format string, args ...any) *apiError {
	return &apiError{status: 400, message: fmt.Sprintf(format, args...)}
}

// parseRequest reads a request body with gjson, checking what the API checks: a JSON object
// with model, messages and (for /v1/messages) max_tokens ≥ 1.
func parseRequest(body []byte, needMaxTokens bool) (request, *apiError) {
	var r request
	if len(body) == 0 {
		return r, invalid("request body is empty")
	}
	// A string view of the body, not a copy: gjson only reads it, and every string kept in r is
	// cloned. This saves copying every body on the load-test path.
	s := unsafe.String(unsafe.SliceData(body), len(body))
	if !gjson.Valid(s) {
		return r, invalid("There was an error parsing the body of your request: malformed JSON")
	}
	root := gjson.Parse(s)
	if !root.IsObject() {
		return r, invalid("request body must be a JSON object")
	}
	var model, maxTokens, messages, system, stream, thinking gjson.Result
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			model = v
		case "max_tokens":
			maxTokens = v
		case "messages":
			messages = v
		case "system":
			system = v
		case "stream":
			stream = v
		case "thinking":
			thinking = v
		}
		return true
	})

	if !model.Exists() {
		return r, invalid("model: Field required")
	}
	if model.Type != gjson.String || model.Str == "" {
		return r, invalid("model: Input should be a non-empty string")
	}
	r.model = model.Str

	if needMaxTokens {
		if !maxTokens.Exists() {
			return r, invalid("max_tokens: Field required")
		}
		v := maxTokens.Num
		switch {
		case maxTokens.Type != gjson.Number || v != math.Trunc(v):
			return r, invalid("max_tokens: Input should be a valid integer")
		case v < 1:
			return r, invalid("max_tokens: Input should be greater than or equal to 1")
		case v > maxTokensMax:
			return r, invalid("max_tokens: Input should be less than or equal to %d", int64(maxTokensMax))
		}
		r.maxTokens = int64(v)
	}

	if stream.Exists() {
		if !stream.IsBool() {
			return r, invalid("stream: Input should be a valid boolean")
		}
		r.stream = stream.Bool()
	}
	if thinking.IsObject() {
		t := thinking.Get("type").Str
		r.thinking = t == "enabled" || t == "adaptive"
	}

	if !messages.Exists() {
		return r, invalid("messages: Field required")
	}
	if !messages.IsArray() {
		return r, invalid("messages: Input should be a valid list")
	}
	r.textBytes = contentBytes(system)
	var lastUser gjson.Result
	var n int
	var bad *apiError
	messages.ForEach(func(_, m gjson.Result) bool {
		if !m.IsObject() {
			bad = invalid("messages.%d: Input should be a valid dictionary", n)
			return false
		}
		var role, content gjson.Result
		m.ForEach(func(k, v gjson.Result) bool {
			switch k.Str {
			case "role":
				role = v
			case "content":
				content = v
			}
			return true
		})
		if role.Str != "user" && role.Str != "assistant" {
			bad = invalid("messages.%d.role: Input should be 'user' or 'assistant'", n)
			return false
		}
		if !content.Exists() {
			bad = invalid("messages.%d.content: Field required", n)
			return false
		}
		r.textBytes += contentBytes(content)
		if role.Str == "user" {
			lastUser = content
		}
		n++
		return true
	})
	if bad != nil {
		return r, bad
	}
	if n == 0 {
		return r, invalid("messages: at least one message is required")
	}
	r.model = answeredModel(r.model) // clones: r.model aliased the body until here

	args, found := directiveIn(lastUser)
	if found {
		d, err := parseDirective(args)
		if err != nil {
			return r, invalid("mock directive: %v", err)
		}
		r.directive, r.hasDirective = d, true
	}
	return r, nil
}

// The walks below avoid recursion and function parameters on purpose: either makes the
// compiler move their closures' variables to the heap, which doubled the allocations per
// request.

// contentBytes counts the text bytes of a content value: a string, or the text blocks and
// tool_result contents of a block list.
func contentBytes(content gjson.Result) int {
	if content.Type == gjson.String {
		return len(content.Str)
	}
	n := 0
	content.ForEach(func(_, block gjson.Result) bool {
		typ, text, inner := blockFields(block)
		switch {
		case typ == "text":
			n += len(text.Str)
		case typ == "tool_result" && inner.Type == gjson.String:
			n += len(inner.Str)
		case typ == "tool_result":
			inner.ForEach(func(_, b gjson.Result) bool {
				if typ, text, _ := blockFields(b); typ == "text" {
					n += len(text.Str)
				}
				return true
			})
		}
		return true
	})
	return n
}

// directiveIn finds the directive in a content value: the string, or its text blocks.
func directiveIn(content gjson.Result) (args string, found bool) {
	if content.Type == gjson.String {
		return findDirective(content.Str)
	}
	content.ForEach(func(_, block gjson.Result) bool {
		if typ, text, _ := blockFields(block); typ == "text" {
			args, found = findDirective(text.Str)
		}
		return !found
	})
	return args, found
}

// blockFields reads a content block's type, text and content in one pass.
func blockFields(block gjson.Result) (typ string, text, content gjson.Result) {
	block.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = v.Str
		case "text":
			text = v
		case "content":
			content = v
		}
		return true
	})
	return typ, text, content
}
