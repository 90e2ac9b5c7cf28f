package mgmt

import (
	"errors"
	"fmt"
	"time"
)

// Errors callers tell apart (zone/web maps them to HTTP statuses).
var (
	// ErrNoOperator: no operator of that name.
	ErrNoOperator = errors.New("no such operator")
	// ErrOperatorExists: an operator of that name already exists.
	ErrOperatorExists = errors.New("operator already exists")
	// ErrBadLogin: the name or the password is wrong (which, it does not say).
	ErrBadLogin = errors.New("the name or the password is wrong")
	// ErrBadCode: the TOTP or recovery code is wrong, or was used before.
	ErrBadCode = errors.New("the code is wrong or was used already: enter the code your authenticator app shows now, or an unused recovery code")
	// ErrNoSession: no live session for that id; log in again.
	ErrNoSession = errors.New("no such session, or it ended: log in again")
	// ErrPartial: the session must answer its MFA query first.
	ErrPartial = errors.New("the session is waiting for its second factor: answer the TOTP query first")
	// ErrNotPartial: the session has no query to answer.
	ErrNotPartial = errors.New("the session has no outstanding authentication query")
	// ErrNoToken: no valid API token of that secret or name.
	ErrNoToken = errors.New("no such API token, or it expired or was revoked")
	// ErrBadRequest: what was asked for is invalid (the message says how).
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: no session or token by that id (or name).
	ErrNotFound = errors.New("not found")
	// ErrBusy: too many logins are being checked at once; retry shortly.
	ErrBusy = errors.New("too many logins are being checked at once: try again in a few seconds")
)

// BackoffError refuses a login or an MFA answer after repeated failures
// for the same account or from the same address.
type BackoffError struct {
	RetryAfter time.Duration
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("too many failed attempts: try again in %v", e.RetryAfter.Round(time.Second))
}

func badRequest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, a...))
}
