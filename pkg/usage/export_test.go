package usage

// DecodeGJSON is the general decoder, the reference Decode must agree with.
var DecodeGJSON = decodeGJSON

// DecodesFast says whether Decode takes its fast path for b.
func DecodesFast(b []byte) bool {
	_, ok := decodeFast(b)
	return ok
}
