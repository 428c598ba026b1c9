package fill

import (
	"context"
	"errors"

	"github.com/prismproxy/prism/prerender"
)

// FailureReason is what a client is told of a failed Refresh or Fill: the
// kind of failure ("render timed out", "browser unavailable", ...), never
// the error's chain (URLs, addresses), which belongs in the log.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, prerender.ErrUnavailable):
		return "browser unavailable"
	case errors.Is(err, prerender.ErrNoCapacity):
		return "no tab free"
	case errors.Is(err, prerender.ErrBlank):
		return "the page rendered blank"
	case errors.Is(err, prerender.ErrPageCrashed):
		return "the page crashed its renderer"
	case errors.Is(err, ErrServerStatus):
		return "the page rendered with a server error status"
	case errors.Is(err, context.DeadlineExceeded):
		return "render timed out"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "render error"
}
