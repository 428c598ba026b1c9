// Package internalapi serves PRISM's internal port (spec/internal-api.md):
// recache and invalidate requests, the scheduler status, and pause/resume.
// Every request must carry X-Internal-Auth; every error answer is
// {"status":"error","message":...}.
package internalapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prismproxy/prism/cachestore"
	"github.com/prismproxy/prism/cluster"
	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/recache"
	"github.com/prismproxy/prism/site"
)

// Options configures the internal API handler.
type Options struct {
	Sites     *site.Table               // required: hosts and dimensions requests name
	Scheduler *recache.Scheduler        // required: recache queues, status, pause
	Store     *cachestore.Store         // required: invalidation
	Capacity  func() prerender.Capacity // the render pool's tabs; nil reports zeros
	// Cluster delivers invalidations to the other nodes and makes /status
	// cluster-wide (cluster.Node); nil: a single node.
	Cluster interface {
		Purge(ctx context.Context, p cluster.Purge) cluster.PurgeResult
		Status(ctx context.Context) (cluster.Status, error)
	}
	// AuthKey is the X-Internal-Auth secret (required: New fails when empty).
	AuthKey string
	// SchedulerControl enables /internal/scheduler/pause and /resume; when
	// false they answer 403.
	SchedulerControl bool
	DaemonID         string           // reported by /status
	Start            time.Time        // process start, for uptime; zero means when New ran
	Now              func() time.Time // nil means time.Now
	Logger           *slog.Logger     // nil means slog.Default()
}

// ErrNoAuthKey is returned by New when Options.AuthKey is empty.
var ErrNoAuthKey = errors.New("internalapi: internal.auth_key is empty: set it (or PRISM_INTERNAL_AUTH_KEY) to serve the internal port")

// maxBody bounds request bodies: 10000 URLs of up to 2 KB each, with room
// for JSON overhead.
const maxBody = 32 << 20

type server struct {
	opts    Options
	log     *slog.Logger
	keyHash [sha256.Size]byte
	mux     *http.ServeMux
	maxBody int64 // maxBody; tests lower it
}

// New returns the internal port's handler. It is safe for concurrent use.
func New(opts Options) (http.Handler, error) {
	switch {
	case opts.AuthKey == "":
		return nil, ErrNoAuthKey
	case opts.Sites == nil:
		return nil, errors.New("internalapi: Options.Sites is required")
	case opts.Scheduler == nil:
		return nil, errors.New("internalapi: Options.Scheduler is required")
	case opts.Store == nil:
		return nil, errors.New("internalapi: Options.Store is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Start.IsZero() {
		opts.Start = opts.Now()
	}
	if opts.Capacity == nil {
		opts.Capacity = func() prerender.Capacity { return prerender.Capacity{} }
	}
	s := &server{opts: opts, log: opts.Logger, keyHash: sha256.Sum256([]byte(opts.AuthKey)), mux: http.NewServeMux(), maxBody: maxBody}
	if s.log == nil {
		s.log = slog.Default()
	}
	routes := []struct {
		method, path string
		h            func(http.ResponseWriter, *http.Request) error
	}{
		{http.MethodPost, "/internal/cache/recache", s.recache},
		{http.MethodPost, "/internal/cache/invalidate", s.invalidate},
		{http.MethodGet, "/status", s.status},
		{http.MethodPost, "/internal/scheduler/pause", s.pause},
		{http.MethodPost, "/internal/scheduler/resume", s.resume},
	}
	for _, rt := range routes {
		s.mux.Handle(rt.method+" "+rt.path, s.adapt(rt.h))
		allow := rt.method
		if allow == http.MethodGet {
			allow = "GET, HEAD"
		}
		s.mux.Handle(rt.path, s.adapt(func(w http.ResponseWriter, _ *http.Request) error {
			w.Header().Set("Allow", allow)
			return errorf(http.StatusMethodNotAllowed, "method not allowed")
		}))
	}
	s.mux.Handle("/", s.adapt(func(http.ResponseWriter, *http.Request) error {
		return errorf(http.StatusNotFound, "not found")
	}))
	return s, nil
}

// ServeHTTP checks X-Internal-Auth, then routes. A panic in a handler is
// logged and answered with a 500 in the spec's error format.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("internalapi: panic", "method", r.Method, "path", r.URL.Path, "panic", v)
			writeError(w, errorf(http.StatusInternalServerError, "internal error"))
		}
	}()
	// Hashing both sides makes the comparison constant-time in the key's
	// length too.
	got := sha256.Sum256([]byte(r.Header.Get("X-Internal-Auth")))
	if subtle.ConstantTimeCompare(got[:], s.keyHash[:]) != 1 {
		writeError(w, errorf(http.StatusUnauthorized, "unauthorized"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// httpError is an error with the status and message the client sees.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.code, e.msg) }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

// adapt turns a handler's error into the spec's error answer. Errors that
// are not httpErrors are logged and answered 500 without details.
func (s *server) adapt(h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var he *httpError
		if !errors.As(err, &he) {
			s.log.Error("internalapi: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeError(w, err)
	})
}

func writeError(w http.ResponseWriter, err error) {
	he := &httpError{code: http.StatusInternalServerError, msg: "internal error"}
	errors.As(err, &he)
	writeJSON(w, he.code, errorBody{Status: "error", Message: he.msg})
}

type errorBody struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil { // only our own types are encoded: cannot happen
		code, b = http.StatusInternalServerError, []byte(`{"status":"error","message":"internal error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
