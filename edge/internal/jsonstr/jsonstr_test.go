package jsonstr_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"tollgate/edge/internal/jsonstr"
)

func TestText(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{`"plain"`, "plain"},
		{`""`, ""},
		{`"a\nb"`, "a\nb"},
		{`"\u00e9\""`, "é\""},
		{`12`, ""},
		{`null`, ""},
		{`"`, ""},
	} {
		require.Equal(t, tc.want, jsonstr.Text([]byte(tc.raw)), tc.raw)
	}
}
