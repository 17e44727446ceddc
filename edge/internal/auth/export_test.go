package auth

import (
	"crypto/sha256"
	"log/slog"
	"time"
)

// NewWithLinger is New with the refresher's gathering moment set, so that a test can queue
// every key it means to before the round starts.
func NewWithLinger(cfg Config, src KeySource, log *slog.Logger, linger time.Duration) (*Authenticator, error) {
	return newAuthenticator(cfg, src, log, linger, keepWarm)
}

// NewWithTimings is NewWithLinger with keepWarm, how long after its last hit a key is still
// refreshed without hits, set too.
func NewWithTimings(cfg Config, src KeySource, log *slog.Logger, linger, warm time.Duration) (*Authenticator, error) {
	return newAuthenticator(cfg, src, log, linger, warm)
}

// Peek returns the key id of secret's cached record without counting a hit.
func (a *Authenticator) Peek(secret string) (string, bool) {
	sum := sha256.Sum256([]byte(secret))
	e, ok := a.cache.Get(cacheKey(&sum))
	if !ok || e.digest != sum {
		return "", false
	}
	return e.principal.KeyID, true
}
