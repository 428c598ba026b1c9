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
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/go-rod/rod/lib/proto"
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
	errBlocked        = errors.New("prerender: blocked request")
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

func newOriginTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
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
var respDropHeaders = map[string]bool{
	"Set-Cookie": true, "Set-Cookie2": true, "Alt-Svc": true, "Content-Encoding": true,
	"Strict-Transport-Security": true, "Clear-Site-Data": true,
}

// handlePaused decides one paused request.
func (t *tab) handlePaused(st *renderState, e *proto.FetchRequestPaused) {
	if st == nil { // between renders nothing may load
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
	resp, body, err := r.fetch(st.ctx, e.Request, u)
	if err != nil {
		failMain(err, failReason(err))
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

// fetch performs req in Go: from the configured origin when u's host has
// one, else from the public internet.
func (r *Renderer) fetch(ctx context.Context, req *proto.NetworkRequest, u *url.URL) (*http.Response, []byte, error) {
	target := *u
	target.Fragment, target.RawFragment = "", ""
	rt := r.publicRT
	origin, fromOrigin := r.opts.Origin(u.Host)
	if fromOrigin && origin != nil {
		target.Scheme, target.Host = origin.Scheme, origin.Host
		if p := strings.TrimSuffix(origin.Path, "/"); p != "" {
			target.Path = p + path.Clean("/"+u.Path)
			target.RawPath = ""
		}
		rt = r.originRT
	} else if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !publicAddr(ip) {
		return nil, nil, fmt.Errorf("%w: %s", errPrivateAddress, ip)
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
		return nil, nil, fmt.Errorf("request %s: %w", u, err)
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
		hr.Header.Set("X-Prism-Render", "1")
		hr.Header.Set("X-Forwarded-Host", u.Host)
		hr.Header.Set("X-Forwarded-Proto", u.Scheme)
	}
	client := &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(hr)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, r.opts.MaxBodyBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	if int64(len(data)) > r.opts.MaxBodyBytes {
		return nil, nil, fmt.Errorf("fetch %s: %w", u, errBodyTooLarge)
	}
	return resp, data, nil
}

func failReason(err error) proto.NetworkErrorReason {
	switch {
	case errors.Is(err, errPrivateAddress):
		return proto.NetworkErrorReasonAddressUnreachable
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

func (t *tab) fulfil(id proto.FetchRequestID, resp *http.Response, body []byte) {
	var hdrs []*proto.FetchHeaderEntry
	for k, vs := range resp.Header {
		if hopHeaders[k] || respDropHeaders[k] {
			continue
		}
		for _, v := range vs {
			hdrs = append(hdrs, &proto.FetchHeaderEntry{Name: k, Value: v})
		}
	}
	ctx, cancel := t.cdpCtx()
	defer cancel()
	err := proto.FetchFulfillRequest{
		RequestID: id, ResponseCode: resp.StatusCode, ResponseHeaders: hdrs, Body: body,
	}.Call(t.page.Context(ctx))
	if err != nil {
		t.fail(id, proto.NetworkErrorReasonFailed)
	}
}
