package meter

import (
	"fmt"
	"strings"
)

// FromJSON reads a non-streaming response body: a message ({"id","model","content",
// "stop_reason","usage",…}) or an error ({"type":"error","error":{"type",…}}). It does not
// retain body. A body that is not well-formed JSON (for example cut off) returns
// ErrMalformed with whatever could be read before the fault, never Complete.
func FromJSON(body []byte) (Result, error) {
	var (
		r                 Result
		id, model, stop   jstr
		errType           jstr
		u                 usageFields
		hasUsage          bool
		errorObj, typeErr bool
		text              int64
	)
	end := members(body, skipWS(body, 0), func(key []byte, v int) int {
		var e int
		switch string(key) {
		case "id":
			id, e = stringAt(body, v)
		case "model":
			model, e = stringAt(body, v)
		case "stop_reason":
			stop, e = stringAt(body, v)
		case "usage":
			u, hasUsage, e = usageAt(body, v)
		case "type":
			var t jstr
			t, e = stringAt(body, v)
			typeErr = t.is("error")
		case "error":
			errType, e = errorTypeAt(body, v)
			errorObj = v < len(body) && body[v] == '{'

		case "content":
			text = 0
			if v < len(body) && body[v] == '[' {
				e = elements(body, v, func(v int) int {
					if v < len(body) && body[v] == '{' {
						n, e := textIn(body, v)
						text += n
						return e
					}
					return skipValue(body, v)
				})
			} else {
				e = skipValue(body, v)
			}
		default:
			e = skipValue(body, v)
		}
		return e
	})
	r.MessageID = id.own(strings.Clone)
	r.Model = model.own(strings.Clone)
	r.StopReason = stop.own(internStop)
	r.TextBytes = text
	switch {
	case errorObj && errType.ok:
		r.ErrorType = errType.own(internError)
	case errorObj || typeErr:
		r.ErrorType = internError("")
	}
	u.merge(&r.Tokens)
	finish(&r)
	if !whole(body, end) {
		return r, fmt.Errorf("read upstream body: %w", ErrMalformed)
	}
	r.Complete = hasUsage && r.ErrorType == ""
	return r, nil
}
