package auth

import (
	"log/slog"
	"time"
)

// NewWithLinger is New with the refresher's gathering moment set, so that a test can queue
// every key it means to before the round starts.
func NewWithLinger(cfg Config, src KeySource, log *slog.Logger, linger time.Duration) (*Authenticator, error) {
	return newAuthenticator(cfg, src, log, linger)
}
