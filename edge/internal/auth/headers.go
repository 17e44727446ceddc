package auth

// KeyFromHeaders returns the API key a client sent: the x-api-key header when present, else
// the token of "Authorization: Bearer <token>" (scheme case-insensitive, as RFC 9110 says).
// Surrounding spaces and tabs are trimmed. Other schemes carry no key. The result aliases
// the arguments.
func KeyFromHeaders(xAPIKey, authorization []byte) []byte {
	if k := trim(xAPIKey); len(k) > 0 {
		return k
	}
	a := trim(authorization)
	const scheme = "bearer"
	if len(a) <= len(scheme) || (a[len(scheme)] != ' ' && a[len(scheme)] != '\t') {
		return nil
	}
	for i := range len(scheme) {
		if a[i]|0x20 != scheme[i] {
			return nil
		}
	}
	return trim(a[len(scheme):])
}

func trim(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
