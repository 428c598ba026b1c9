package prerender

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-rod/rod/lib/proto"
)

// Large responses are streamed, not held.
//
// DevTools fulfils a paused request with its whole body in one message, so
// a body handed over that way is held by PRISM whole (about three times
// over while it is encoded). A response larger than streamThreshold, or of
// unknown length that passes it, is instead handed over through a loopback
// HTTP server of PRISM's own: the paused request is continued
// (Fetch.continueRequest) to a one-time URL on it, in a way the page cannot
// observe, and the server copies the origin's response to Chromium as it
// arrives, counting the page's bytes as it goes. Only that server's address
// is let past the browser's dead proxy; a page that asks for it itself is
// paused and refused like any loopback address, and a token it could guess
// would still name nothing (tokens are random and used once).
const streamThreshold = 1 << 20

// streamServer hands streamed bodies to the browser. It is safe for
// concurrent use.
type streamServer struct {
	r    *Renderer
	ln   net.Listener
	srv  *http.Server
	base string // "http://127.0.0.1:port/"

	mu      sync.Mutex
	pending map[string]*stream
	unknown int // requests that named no pending stream (tests)
}

// stream is one response waiting for the browser to fetch it.
type stream struct {
	st     *renderState
	url    string // the page's (public) URL of the response, for logs
	resp   *http.Response
	prefix []byte        // already read (a body of unknown length, peeked)
	done   chan struct{} // closed when the copy ended, either way
	once   sync.Once
	err    error // set before done closes
}

func (s *stream) finish(err error) {
	s.once.Do(func() {
		s.err = err
		s.resp.Body.Close()
		close(s.done)
	})
}

// startStreams listens on a loopback port and serves until ctx is done.
func (r *Renderer) startStreams(ctx context.Context) (*streamServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &streamServer{r: r, ln: ln, base: "http://" + ln.Addr().String() + "/", pending: map[string]*stream{}}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, ErrorLog: nil}
	r.drains.Add(2)
	go func() {
		defer r.drains.Done()
		_ = s.srv.Serve(ln)
	}()
	go func() {
		defer r.drains.Done()
		<-ctx.Done()
		_ = s.srv.Close()
	}()
	return s, nil
}

// addr is host:port of the server, for the browser's proxy bypass list.
func (s *streamServer) addr() string { return s.ln.Addr().String() }

// hand continues paused request id to a one-time URL serving resp, and
// returns when the browser has taken all of it (or failed to, or st's
// render ended).
func (s *streamServer) hand(t *tab, id proto.FetchRequestID, st *renderState, u string, resp *http.Response, prefix []byte) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	sm := &stream{st: st, url: u, resp: resp, prefix: prefix, done: make(chan struct{})}
	s.mu.Lock()
	s.pending[token] = sm
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, token)
		s.mu.Unlock()
		sm.finish(context.Cause(st.ctx)) // not taken: let the origin go
	}()
	ctx, cancel := t.cdpCtx()
	err := proto.FetchContinueRequest{RequestID: id, URL: s.base + token}.Call(t.page.Context(ctx))
	cancel()
	if err != nil {
		t.fail(id, proto.NetworkErrorReasonFailed)
		return err
	}
	select {
	case <-sm.done:
		return sm.err
	case <-st.ctx.Done():
		return context.Cause(st.ctx)
	}
}

// ServeHTTP copies the stream its path names to the browser.
func (s *streamServer) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	token := req.URL.Path[1:]
	s.mu.Lock()
	sm := s.pending[token]
	delete(s.pending, token)
	if sm == nil {
		s.unknown++
	}
	s.mu.Unlock()
	if sm == nil {
		http.NotFound(w, req)
		return
	}
	err := s.copy(w, sm)
	sm.finish(err)
	if err != nil {
		panic(http.ErrAbortHandler) // the browser sees the transfer fail, never a short body as whole
	}
}

func (s *streamServer) copy(w http.ResponseWriter, sm *stream) error {
	r, st, resp := s.r, sm.st, sm.resp
	h := w.Header()
	for k, vs := range resp.Header {
		if passedOn(k) {
			h[k] = vs
		}
	}
	h.Set("Cache-Control", "no-store") // never reused (see browserCacheControl)
	if resp.ContentLength >= 0 {
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	total := int64(0)
	write := func(b []byte) error {
		total += int64(len(b))
		if total > r.opts.MaxBodyBytes {
			return errBodyTooLarge
		}
		if !st.takeBytes(int64(len(b)), r.opts.MaxPageBytes) {
			return errPageBytes
		}
		_, err := w.Write(b)
		return err
	}
	if len(sm.prefix) > 0 {
		if err := write(sm.prefix); err != nil {
			r.refused(st, sm.url, err)
			return err
		}
	}
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if err := write(buf[:n]); err != nil {
				r.refused(st, sm.url, err)
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
