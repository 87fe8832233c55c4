package upstream

import "errors"

// IsMalformed reports whether err from Do says the backend answered
// something that is not an acceptable HTTP/1.1 response head (malformed or
// too large), as opposed to a connection that failed.
func IsMalformed(err error) bool {
	return errors.Is(err, errMalformed) || errors.Is(err, errHeadTooLarge)
}
