package site

import (
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// OriginURL returns where a request for the public URL u is sent: to
// origin's scheme and host, under origin's path when it has one (u's path
// cleaned, so it cannot climb out of it), with u's query and without its
// fragment. The request's Host stays the public one; callers set it.
func OriginURL(origin, u *url.URL) *url.URL {
	out := *u
	out.Fragment, out.RawFragment = "", ""
	out.Scheme, out.Host = origin.Scheme, origin.Host
	if p := strings.TrimSuffix(origin.Path, "/"); p != "" {
		out.Path = p + path.Clean("/"+u.Path)
		out.RawPath = ""
	}
	return &out
}

// OriginHeaderTimeout is how long to wait for an origin's response headers
// when the public port cuts a response after writeTimeout: half of it, so an
// answer saying the origin timed out still reaches the client, and never
// more than 30s. A writeTimeout of 0 (no cut) gives 30s.
func OriginHeaderTimeout(writeTimeout time.Duration) time.Duration {
	const most = 30 * time.Second
	if writeTimeout <= 0 {
		return most
	}
	return min(most, writeTimeout/2)
}

// NewOriginTransport returns the transport PRISM reaches origins with (the
// proxy's pass-through and fallbacks, the renderer's fetches for configured
// hosts, sitemap fetches): no environment proxy, bounded dials, TLS
// handshakes and header waits (headerTimeout; 0 means none: the caller's
// context bounds it), and enough idle connections per origin that a busy
// site does not redial for every request.
func NewOriginTransport(headerTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy: nil, // origins are reached directly, never through $HTTP_PROXY
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           1024,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		ResponseHeaderTimeout:  headerTimeout,
		MaxResponseHeaderBytes: 1 << 20,
	}
}
