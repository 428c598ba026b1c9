package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// How the origin's answer reaches the client (pass-through and BYPASS).
//
// The reverse proxy hands the origin's status line to the client before it
// has the body, and net/http holds both in a buffer until the body fills
// it. Two origins defeat that: one that sends its headers and then
// trickles (the buffered status line never leaves before the server's
// write timeout closes the connection), and one that announces more bytes
// than it sends (the copy fails and the handler aborts, again with the
// status line still buffered). Either way the client got a closed
// connection and no status. originWriter fixes both: it holds the status,
// headers and the first originHoldBytes of the body itself, so that a
// response failing within them becomes a clean 502, and it commits and
// flushes them at most originFlushDelay after the origin's headers, so the
// client has its status line within that bound however slowly the rest
// comes. A response that fails after that is passed on as the origin sent
// it: flushed, then cut, so the client sees a truncated transfer (its
// Content-Length or chunking says so), never one presented as complete.
const (
	originHoldBytes  = 32 << 10
	originFlushDelay = 200 * time.Millisecond
)

var (
	errOriginStatus = errors.New("proxy: origin sent an invalid status")
	// errFallbackTimeout is the cause of a BYPASS fetch that ran out of
	// Options.FallbackTimeout: the origin is slow, the client still waits.
	errFallbackTimeout = errors.New("proxy: origin fallback timed out")
)

// originWriter wraps the client's ResponseWriter for one reverse-proxied
// request. The handler goroutine writes; a timer may commit from another
// goroutine, so every use of w is under mu.
type originWriter struct {
	w     http.ResponseWriter
	buf   []byte // body held back, from pool
	pool  *bufferPool
	timer *time.Timer

	mu        sync.Mutex
	status    int  // the final status the reverse proxy wrote; 0: none yet
	committed bool // status and held body went to w
	done      bool // finish or abort ran: the timer does nothing
	// late collects headers set after the status (trailers): w's map is
	// read by a commit on the timer's goroutine, so it is not touched
	// after the status until finish, on the handler's goroutine.
	late http.Header
}

func newOriginWriter(w http.ResponseWriter, pool *bufferPool) *originWriter {
	return &originWriter{w: w, pool: pool}
}

// Header returns the client's headers until the final status, and after it
// a map whose entries (trailers) are merged in by finish.
func (o *originWriter) Header() http.Header {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status == 0 {
		return o.w.Header()
	}
	if o.late == nil {
		o.late = http.Header{}
	}
	return o.late
}

func (o *originWriter) WriteHeader(code int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status != 0 || o.done {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		o.w.WriteHeader(code) // informational (103 Early Hints): sent as it comes
		return
	}
	o.status = code
	o.timer = time.AfterFunc(originFlushDelay, o.onTimer)
}

func (o *originWriter) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status == 0 {
		o.status = http.StatusOK
	}
	if !o.committed {
		if o.buf == nil {
			o.buf = o.pool.Get()[:0]
		}
		if len(o.buf)+len(b) <= cap(o.buf) {
			o.buf = append(o.buf, b...)
			return len(b), nil
		}
		if err := o.commitLocked(); err != nil {
			return 0, err
		}
	}
	return o.w.Write(b)
}

// FlushError commits and flushes (streaming responses such as
// text/event-stream are flushed by the reverse proxy after every write).
func (o *originWriter) FlushError() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.status == 0 {
		o.status = http.StatusOK
	}
	if err := o.commitLocked(); err != nil {
		return err
	}
	return http.NewResponseController(o.w).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer (the
// reverse proxy hijacks it for protocol upgrades).
func (o *originWriter) Unwrap() http.ResponseWriter { return o.w }

func (o *originWriter) onTimer() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done || o.committed {
		return
	}
	if o.commitLocked() == nil {
		_ = http.NewResponseController(o.w).Flush()
	}
}

// commitLocked sends the status and the held body to w.
func (o *originWriter) commitLocked() error {
	if o.committed {
		return nil
	}
	o.committed = true
	o.w.WriteHeader(o.status)
	if len(o.buf) > 0 {
		if _, err := o.w.Write(o.buf); err != nil {
			return err
		}
	}
	return nil
}

// finish commits what the reverse proxy wrote once it returned normally.
func (o *originWriter) finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stopLocked()
	if o.status != 0 {
		_ = o.commitLocked()
	}
	if len(o.late) > 0 {
		h := o.w.Header()
		for k, vv := range o.late {
			h[k] = vv
		}
	}
}

// abort handles a response the reverse proxy abandoned halfway (its body
// copy failed). It reports whether the client got a complete answer
// instead: a 502 when nothing had gone out yet. Otherwise it flushes what
// was committed, and the caller must abort the connection so the client
// sees the transfer cut.
func (o *originWriter) abort() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stopLocked()
	if o.committed {
		_ = http.NewResponseController(o.w).Flush()
		return false
	}
	h := o.w.Header()
	for k := range h {
		if !strings.HasPrefix(k, "X-Prism-") {
			delete(h, k)
		}
	}
	o.status = http.StatusBadGateway
	o.committed = true
	writeOriginError(o.w, http.StatusBadGateway)
	return true
}

func (o *originWriter) stopLocked() {
	o.done = true
	if o.timer != nil {
		o.timer.Stop()
	}
}

// release returns the held buffer; o is not used afterwards.
func (o *originWriter) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.buf != nil {
		o.pool.Put(o.buf[:cap(o.buf)])
		o.buf = nil
	}
}

// serveOrigin reverse-proxies r to its host's origin through an
// originWriter and returns the status the client got.
func (p *Proxy) serveOrigin(w http.ResponseWriter, r *http.Request) (status int) {
	o := newOriginWriter(w, p.bufs)
	defer o.release()
	defer func() {
		v := recover()
		switch {
		case v == nil:
			o.finish()
		case v == http.ErrAbortHandler && o.abort():
			p.m.originErrors.Inc()
			p.log.Warn("proxy: origin response failed before any of it was sent", "host", r.Host, "path", r.URL.Path, "status", http.StatusBadGateway)
		default:
			// Not the reverse proxy's abort: the timer must not write to w
			// once this handler is gone.
			o.mu.Lock()
			o.stopLocked()
			o.mu.Unlock()
			panic(v)
		}
		status = o.status
	}()
	p.rp.ServeHTTP(o, r)
	return 0 // set by the deferred function
}

// withFallbackDeadline bounds a BYPASS fetch by d (errFallbackTimeout).
func withFallbackDeadline(r *http.Request, d time.Duration) (*http.Request, context.CancelFunc) {
	ctx, cancel := context.WithTimeoutCause(r.Context(), d, errFallbackTimeout)
	return r.WithContext(ctx), cancel
}
