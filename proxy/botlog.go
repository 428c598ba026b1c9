package proxy

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prismproxy/prism/fill"
	"github.com/prismproxy/prism/site"
)

// botLine is what the one log line of a crawler request says.
type botLine struct {
	host       *site.Host
	dim        *site.Dimension
	path       string
	state      fill.CacheState
	status     int
	rendered   bool          // the request waited for a render (or joined one)
	renderTime time.Duration // that wait: the render itself, no fallback fetch
	ended      string        // why the render stopped waiting (prerender.Result.Ended), "" when not known
	settle     time.Duration // how long its page took to settle
	total      time.Duration // what the crawler waited, fallback fetch included
	err        error         // why the render did not answer (a fallback)
}

// level is the line's level:
//   - Debug: a hit that rendered nothing. Hits are the bulk of the
//     traffic and cheap; a log line each (a write per request) cost about
//     a quarter of a hit's CPU, so an operator sees them only at debug.
//   - Info: a render (MISS, or a HIT that joined a render), a stale hit
//     (its recache is queued).
//   - Warn: a fallback (the origin's page or the stale copy served because
//     the render failed, timed out or was refused for overload) and any
//     answer of 500 or more the crawler got.
func (l *botLine) level() slog.Level {
	switch {
	case l.err != nil || l.status >= 500:
		return slog.LevelWarn
	case l.state == fill.CacheHit && !l.rendered:
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// logBot writes the request's line.
func (p *Proxy) logBot(r *http.Request, l botLine) {
	level := l.level()
	if !p.log.Enabled(r.Context(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, 13)
	attrs = append(attrs,
		slog.String("host", l.host.Name), slog.String("dimension", l.dim.Name), slog.String("path", l.path),
		slog.String("cache", l.state.String()), slog.Int("status", l.status),
		slog.String("client", p.clientAddr(r)), slog.String("ua", logUA(r)))
	if l.rendered {
		attrs = append(attrs, slog.Int64("render_ms", l.renderTime.Milliseconds()))
		if l.ended != "" {
			attrs = append(attrs, slog.String("ended", l.ended), slog.Int64("settle_ms", l.settle.Milliseconds()))
		}
	}
	attrs = append(attrs, slog.Int64("total_ms", l.total.Milliseconds()))
	if l.err != nil {
		attrs = append(attrs, slog.Any("err", l.err))
	}
	p.log.LogAttrs(r.Context(), level, "proxy: bot", attrs...)
}

// maxLogUA bounds the User-Agent written to the log: it is the client's
// text, and a log line must not grow with whatever it sends.
const maxLogUA = 256

// logUA is r's User-Agent for the log, cut at maxLogUA bytes.
func logUA(r *http.Request) string {
	ua := headerValue(r.Header, "User-Agent")
	if len(ua) > maxLogUA {
		ua = ua[:maxLogUA] + "..."
	}
	return ua
}

// clientAddr is the crawler's address: the peer's, or, when the peer is a
// trusted proxy, the X-Forwarded-For entry nearest to it that is not a
// trusted proxy itself (entries further left are the client's own claims
// and could be forged).
func (p *Proxy) clientAddr(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	addr := ap.Addr().Unmap()
	if !p.trustedAddr(addr) {
		return addr.String()
	}
	vv := r.Header["X-Forwarded-For"]
	for i := len(vv) - 1; i >= 0; i-- {
		list := vv[i]
		for list != "" {
			var item string
			if j := strings.LastIndexByte(list, ','); j >= 0 {
				item, list = list[j+1:], list[:j]
			} else {
				item, list = list, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(item))
			if err != nil {
				return addr.String() // garbage: the last address known good
			}
			addr = a.Unmap()
			if !p.trustedAddr(addr) {
				return addr.String()
			}
		}
	}
	return addr.String()
}

// trustedAddr reports whether a is in Options.TrustedProxies.
func (p *Proxy) trustedAddr(a netip.Addr) bool {
	for _, pfx := range p.opts.TrustedProxies {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}
