package prerender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/go-rod/rod/lib/proto"

	"github.com/prismproxy/prism/site"
)

// Every request a page makes is paused (Fetch domain) and decided here:
// blocked by type or host, fetched from a configured origin, or fetched
// from the public internet by a dialer that refuses non-public addresses at
// connect time (no DNS rebinding). Chromium itself never touches the
// network: its proxy is a dead address.

// defaultBlockHosts are analytics, tag-manager and ad hosts (and their
// subdomains) never loaded during a render.
var defaultBlockHosts = []string{
	"google-analytics.com", "googletagmanager.com", "googleadservices.com",
	"googlesyndication.com", "doubleclick.net", "adservice.google.com",
	"connect.facebook.net", "hotjar.com", "hotjar.io", "segment.com", "segment.io",
	"mixpanel.com", "mxpnl.com", "amplitude.com", "fullstory.com", "clarity.ms",
	"bat.bing.com", "heapanalytics.com", "heap.io", "newrelic.com", "nr-data.net",
	"optimizely.com", "criteo.com", "criteo.net", "taboola.com", "outbrain.com",
	"adnxs.com", "scorecardresearch.com", "quantserve.com", "chartbeat.com",
	"chartbeat.net", "mouseflow.com", "crazyegg.com", "luckyorange.com",
	"snap.licdn.com", "ads.linkedin.com", "analytics.twitter.com",
	"static.ads-twitter.com", "analytics.tiktok.com", "intercom.io",
	"intercomcdn.com", "plausible.io", "matomo.cloud", "hs-analytics.net",
	"mc.yandex.ru", "amazon-adsystem.com", "adsrvr.org",
}

var (
	errPrivateAddress = errors.New("prerender: non-public address refused")
	errBodyTooLarge   = errors.New("prerender: response body too large")
	errPageBytes      = errors.New("prerender: the page's responses passed Options.MaxPageBytes")
	errInflightBytes  = errors.New("prerender: the browser's responses in flight passed Options.MaxInflightBytes")
	errBlocked        = errors.New("prerender: blocked request")
	errBadStatus      = errors.New("prerender: invalid status from the server")
)

// nonPublic are address ranges a rendered page may never reach (beyond
// what netip's Is* methods cover).
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("fec0::/10"),
}

// publicAddr reports whether ip is a public unicast address.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() ||
		ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// refuseNonPublic is a net.Dialer Control: it runs on the resolved address.
func refuseNonPublic(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", errPrivateAddress, address)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !publicAddr(ip) {
		return fmt.Errorf("%w: %s", errPrivateAddress, host)
	}
	return nil
}

func newPublicTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: refuseNonPublic}
	return &http.Transport{
		Proxy:               nil, // a proxy would be dialled past the address check
		DialContext:         d.DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     60 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}

// hostBlocked reports whether host or one of its parents is in blockHosts.
func hostBlocked(blockHosts []string, host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, h := range blockHosts {
		if host == h || strings.HasSuffix(host, "."+h) {
			return true
		}
	}
	return false
}

// hopHeaders are not forwarded in either direction. Accept-Encoding is
// dropped so that Go negotiates and decodes compression itself.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authorization": true,
	"Proxy-Authenticate": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Host": true, "Content-Length": true, "Accept-Encoding": true,
}

// respDropHeaders are never passed from a fetched response to the browser.
// The freshness headers are replaced by browserCacheControl's.
var respDropHeaders = map[string]bool{
	"Set-Cookie": true, "Set-Cookie2": true, "Alt-Svc": true, "Content-Encoding": true,
	"Strict-Transport-Security": true, "Clear-Site-Data": true,
	"Cache-Control": true, "Expires": true, "Pragma": true, "Age": true,
}

// browserCacheControl is the Cache-Control the browser gets with a
// response, in place of the origin's freshness headers.
//
// The browser keeps what it loaded across renders (Blink's memory cache: a
// script it need not fetch, decode and compile again is most of what a
// caching browser saves; responses PRISM fulfils never reach Chromium's
// HTTP cache), but on an ordinary load it may use a kept copy only after
// the origin confirmed it on this render: every response is "no-cache", so
// the next render's request for it carries the validators (If-None-Match,
// If-Modified-Since), goes to the origin like any other, and gets the kept
// copy only when the origin answers 304. A deploy is seen by the very next
// render, as with no cache at all, as long as the origin's validators
// change with the content (Options.NoBrowserCache is for those that do
// not). A response with no ETag nor Last-Modified, one the origin marked
// no-store and a partial one are "no-store": never reused on an ordinary
// load; so is a streamed one (large), which streamServer.copy marks so
// itself. A back or forward navigation inside a render
// may reuse any kept copy unasked (Blink's rule for history loads); it can
// only be the page's own doing, within its own render.
func browserCacheControl(status int, h http.Header) string {
	if status == http.StatusPartialContent {
		return "no-store"
	}
	for _, v := range h.Values("Cache-Control") {
		if strings.Contains(strings.ToLower(v), "no-store") {
			return "no-store" // on a 304 too: the browser takes its headers for the copy's
		}
	}
	if status == http.StatusNotModified {
		return "no-cache" // the kept copy's validators stand
	}
	if h.Get("ETag") == "" && h.Get("Last-Modified") == "" {
		return "no-store"
	}
	return "no-cache"
}

// handlePaused decides one paused request.
func (t *tab) handlePaused(st *renderState, e *proto.FetchRequestPaused) {
	if st == nil { // between renders nothing may load, but warmUp's page
		if u := t.warming.Load(); u != nil && e.Request.URL == *u && e.ResourceType == proto.NetworkResourceTypeDocument {
			h := http.Header{"Content-Type": {"text/html; charset=utf-8"}}
			t.fulfil(e.RequestID, &http.Response{StatusCode: http.StatusOK, Header: h}, []byte(warmPage))
			return
		}
		t.fail(e.RequestID, proto.NetworkErrorReasonAborted)
		return
	}
	r := t.inst.r
	isMain := e.ResourceType == proto.NetworkResourceTypeDocument && e.FrameID == st.mainFrame && st.claimMain()
	failMain := func(err error, reason proto.NetworkErrorReason) {
		if isMain {
			st.setMain(&mainDoc{err: err})
		}
		t.fail(e.RequestID, reason)
	}
	u, err := url.Parse(e.Request.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		failMain(fmt.Errorf("%w: url %q", errBlocked, e.Request.URL), proto.NetworkErrorReasonBlockedByClient)
		return
	}
	if !isMain && r.blockTypes[strings.ToLower(string(e.ResourceType))] {
		t.fail(e.RequestID, proto.NetworkErrorReasonBlockedByClient)
		return
	}
	if hostBlocked(r.blockHosts, u.Hostname()) {
		failMain(fmt.Errorf("%w: host %s", errBlocked, u.Hostname()), proto.NetworkErrorReasonBlockedByClient)
		return
	}
	if e.ResourceType == proto.NetworkResourceTypeDocument {
		st.addOrigin(u)
	}
	resp, body, release, streamed, err := r.fetch(st, e.Request, u, !isMain)
	if err != nil {
		r.refused(st, u.String(), err)
		failMain(err, failReason(err))
		return
	}
	defer release()
	if e.ResourceType == proto.NetworkResourceTypeScript {
		n := int64(len(body))
		if streamed {
			n = max(resp.ContentLength, streamThreshold) // unknown length: at least what was peeked
		}
		st.sized(e.RequestID, n, resp.StatusCode == http.StatusNotModified)
	}
	if conditional(e.Request) {
		r.metrics.revalidated(resp.StatusCode)
	}
	if streamed {
		if err := r.streams.hand(t, e.RequestID, st, u.String(), resp, body); err != nil && st.ctx.Err() == nil {
			r.log.Debug("render: streamed response failed", "url", u.String(), "err", err)
		}
		return
	}
	if isMain {
		m := &mainDoc{status: resp.StatusCode, header: resp.Header.Clone()}
		if loc := resp.Header.Get("Location"); isRedirect(resp.StatusCode) && loc != "" {
			m.location = absoluteURL(u, loc)
			st.setMain(m)
			t.fail(e.RequestID, proto.NetworkErrorReasonAborted) // returned, not followed
			return
		}
		st.setMain(m)
	}
	t.fulfil(e.RequestID, resp, body)
}

// conditional reports whether req names validators (If-None-Match,
// If-Modified-Since): the browser asks whether a copy it kept still stands.
func conditional(req *proto.NetworkRequest) bool {
	return hasHeader(req.Headers, "If-None-Match") || hasHeader(req.Headers, "If-Modified-Since")
}

// hasHeader reports whether h holds the header name (any case).
func hasHeader(h proto.NetworkHeaders, name string) bool {
	for k := range h {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// fetch performs req in Go for st's page: from the configured origin when
// u's host has one, else from the public internet. The body is read whole
// (DevTools fulfils a request with its whole body), within three bounds:
// Options.MaxBodyBytes for it, Options.MaxPageBytes for all of the page's,
// and Options.MaxInflightBytes for every body held across the browser until
// it is handed over; release gives the last back.
//
// With mayStream, a body past streamThreshold is not read: streamed is
// set, data holds what was read of it already (peeked, when its length was
// unknown), and the body is left open for streamServer.hand, which closes
// it. A main document is never streamed: it is small, and its status is
// decided here.
func (r *Renderer) fetch(st *renderState, req *proto.NetworkRequest, u *url.URL, mayStream bool) (resp *http.Response, data []byte, release func(), streamed bool, err error) {
	ctx := st.ctx
	target := *u
	target.Fragment, target.RawFragment = "", ""
	rt := r.publicRT
	origin, fromOrigin := r.opts.Origin(u.Host)
	if fromOrigin && origin != nil {
		target = *site.OriginURL(origin, u)
		rt = r.originRT
	} else if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !publicAddr(ip) {
		return nil, nil, nil, false, fmt.Errorf("%w: %s", errPrivateAddress, ip)
	}
	var body io.Reader
	if req.HasPostData || req.PostData != "" {
		var buf bytes.Buffer
		for _, pe := range req.PostDataEntries {
			buf.Write(pe.Bytes)
		}
		if buf.Len() == 0 {
			buf.WriteString(req.PostData)
		}
		body = &buf
	}
	hr, err := http.NewRequestWithContext(ctx, req.Method, target.String(), body)
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("request %s: %w", u, err)
	}
	for k, v := range req.Headers {
		name := http.CanonicalHeaderKey(k)
		if hopHeaders[name] || strings.HasPrefix(k, ":") {
			continue
		}
		for _, line := range strings.Split(v.Str(), "\n") {
			hr.Header.Add(name, line)
		}
	}
	if fromOrigin {
		// The origin is reached at its configured address but asked as
		// the public request would ask it: an origin that routes or checks
		// by Host (virtual hosts, ALLOWED_HOSTS, host authorization)
		// answers the renderer as it answers people.
		hr.Host = u.Host
		hr.Header.Set(RenderHeader, "1")
		hr.Header.Set("X-Forwarded-Host", u.Host)
		hr.Header.Set("X-Forwarded-Proto", u.Scheme)
	}
	client := &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	hresp, err := client.Do(hr)
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer func() {
		if !streamed { // a streamed body is closed by streamServer.hand
			hresp.Body.Close()
		}
	}()
	if hresp.StatusCode < 100 || hresp.StatusCode > 999 {
		return nil, nil, nil, false, fmt.Errorf("fetch %s: %w: %d", u, errBadStatus, hresp.StatusCode)
	}
	if mayStream && r.streams != nil && hresp.StatusCode >= 200 && hresp.StatusCode < 300 {
		switch n := hresp.ContentLength; {
		case n > r.opts.MaxBodyBytes:
			return nil, nil, nil, false, fmt.Errorf("fetch %s: %w", u, errBodyTooLarge)
		case n > streamThreshold:
			return hresp, nil, func() {}, true, nil
		case n < 0:
			// Unknown length: read up to the threshold; past it, stream
			// what is read and the rest.
			if err := r.inflight.Acquire(ctx, streamThreshold+1); err != nil {
				return nil, nil, nil, false, fmt.Errorf("fetch %s: %w: %w", u, errInflightBytes, err)
			}
			peek, err := io.ReadAll(io.LimitReader(hresp.Body, streamThreshold+1))
			if err != nil {
				r.inflight.Release(streamThreshold + 1)
				return nil, nil, nil, false, fmt.Errorf("fetch %s: %w", u, err)
			}
			if len(peek) > streamThreshold {
				return hresp, peek, func() { r.inflight.Release(streamThreshold + 1) }, true, nil
			}
			// A small body: hold only what it takes until it is handed over.
			held := max(int64(len(peek)), 1)
			r.inflight.Release(streamThreshold + 1 - held)
			if !st.takeBytes(int64(len(peek)), r.opts.MaxPageBytes) {
				r.inflight.Release(held)
				return nil, nil, nil, false, fmt.Errorf("fetch %s: %w", u, errPageBytes)
			}
			return hresp, peek, func() { r.inflight.Release(held) }, false, nil
		}
	}
	data, held, err := r.readBody(st, hresp)
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("fetch %s: %w", u, err)
	}
	return hresp, data, func() { r.inflight.Release(held) }, false, nil
}

// readBody reads resp's body within the bounds fetch describes and returns
// it with the in-flight bytes it holds.
func (r *Renderer) readBody(st *renderState, resp *http.Response) ([]byte, int64, error) {
	limit := r.opts.MaxBodyBytes
	if n := resp.ContentLength; n >= 0 {
		if n > limit {
			return nil, 0, errBodyTooLarge
		}
		if !st.takeBytes(n, r.opts.MaxPageBytes) {
			return nil, 0, errPageBytes
		}
		held := max(n, 1)
		if err := r.inflight.Acquire(st.ctx, held); err != nil {
			return nil, 0, fmt.Errorf("%w: %w", errInflightBytes, err)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, data); err != nil {
			r.inflight.Release(held)
			return nil, 0, err
		}
		return data, held, nil
	}
	// No length: take in-flight bytes a step ahead of what is read, never
	// waiting for them while holding some (no two bodies wait on each other).
	const step = 256 << 10
	var buf bytes.Buffer
	var held int64
	fail := func(err error) ([]byte, int64, error) {
		r.inflight.Release(held)
		return nil, 0, err
	}
	for {
		if held < int64(buf.Len())+step {
			if !r.inflight.TryAcquire(step) {
				return fail(errInflightBytes)
			}
			held += step
		}
		n, err := io.CopyN(&buf, resp.Body, step)
		if !st.takeBytes(n, r.opts.MaxPageBytes) {
			return fail(errPageBytes)
		}
		if int64(buf.Len()) > limit {
			return fail(errBodyTooLarge)
		}
		if err == io.EOF {
			return buf.Bytes(), held, nil
		}
		if err != nil {
			return fail(err)
		}
	}
}

// refused accounts for a response one of the render's byte bounds refused
// (err; others are left alone): the metric, the render marked as over its
// limit (served as partial), a log line.
func (r *Renderer) refused(st *renderState, u string, err error) {
	reason := limitReason(err)
	if reason == "" {
		return
	}
	r.metrics.fetchRefused(reason)
	st.overLimit.Store(true)
	r.log.Info("render: response refused", "page", st.pub.String(), "url", u, "err", err)
}

// limitReason names the bound err reports, for the metric; "" for others.
func limitReason(err error) string {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return "body_too_large"
	case errors.Is(err, errPageBytes):
		return "page_bytes"
	case errors.Is(err, errInflightBytes):
		return "inflight_bytes"
	}
	return ""
}

func failReason(err error) proto.NetworkErrorReason {
	switch {
	case errors.Is(err, errPrivateAddress):
		return proto.NetworkErrorReasonAddressUnreachable
	case limitReason(err) != "":
		return proto.NetworkErrorReasonBlockedByClient
	case errors.Is(err, context.DeadlineExceeded):
		return proto.NetworkErrorReasonTimedOut
	case errors.Is(err, context.Canceled):
		return proto.NetworkErrorReasonAborted
	case errors.Is(err, syscall.ECONNREFUSED):
		return proto.NetworkErrorReasonConnectionRefused
	}
	return proto.NetworkErrorReasonFailed
}

func isRedirect(status int) bool {
	switch status {
	case 301, 302, 303, 307, 308:
		return true
	}
	return false
}

// absoluteURL resolves ref against base; an unparsable ref is returned as is.
func absoluteURL(base *url.URL, ref string) string {
	u, err := url.Parse(strings.TrimSpace(ref))
	if err != nil {
		return ref
	}
	return base.ResolveReference(u).String()
}

func (t *tab) cdpCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.inst.ctx, 5*time.Second)
}

func (t *tab) fail(id proto.FetchRequestID, reason proto.NetworkErrorReason) {
	ctx, cancel := t.cdpCtx()
	defer cancel()
	_ = proto.FetchFailRequest{RequestID: id, ErrorReason: reason}.Call(t.page.Context(ctx))
}

// passedOn reports whether a fetched response's header k goes on to the
// browser (fulfilled or streamed).
func passedOn(k string) bool { return !hopHeaders[k] && !respDropHeaders[k] }

func (t *tab) fulfil(id proto.FetchRequestID, resp *http.Response, body []byte) {
	var hdrs []*proto.FetchHeaderEntry
	for k, vs := range resp.Header {
		if !passedOn(k) {
			continue
		}
		for _, v := range vs {
			hdrs = append(hdrs, &proto.FetchHeaderEntry{Name: k, Value: v})
		}
	}
	hdrs = append(hdrs, &proto.FetchHeaderEntry{Name: "Cache-Control", Value: browserCacheControl(resp.StatusCode, resp.Header)})
	ctx, cancel := t.cdpCtx()
	defer cancel()
	err := proto.FetchFulfillRequest{
		RequestID: id, ResponseCode: resp.StatusCode, ResponseHeaders: hdrs, Body: body,
	}.Call(t.page.Context(ctx))
	if err != nil {
		t.fail(id, proto.NetworkErrorReasonFailed)
	}
}
