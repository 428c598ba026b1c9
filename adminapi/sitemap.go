package adminapi

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prismproxy/prism/prerender"
	"github.com/prismproxy/prism/site"
)

// sitemapLimits bound what one warmup fetches and parses.
type sitemapLimits struct {
	maxURLs     int   // page URLs kept (after dedupe) per warmup
	maxSitemaps int   // sitemap documents fetched per warmup
	maxDepth    int   // sitemap index nesting: 0 is the root document
	maxBytes    int64 // per document, after decompression
}

var defaultSitemapLimits = sitemapLimits{
	maxURLs:     50_000,
	maxSitemaps: 1_000,
	maxDepth:    3,
	maxBytes:    50 << 20,
}

// maxXMLDepth bounds element nesting in a sitemap document; real ones use 3.
const maxXMLDepth = 32

// errSitemapTooLarge is returned when a sitemap exceeds sitemapLimits.maxBytes.
var errSitemapTooLarge = errors.New("adminapi: sitemap too large")

// sitemapKind is a sitemap document's root element.
type sitemapKind int

const (
	urlSet sitemapKind = iota + 1
	sitemapIndex
)

// parseSitemap reads a <urlset> or <sitemapindex> document and returns the
// text of its <url><loc> or <sitemap><loc> elements (at most maxLocs of
// them; truncated reports that more were present). Namespaces are ignored;
// other elements are skipped.
func parseSitemap(r io.Reader, maxLocs int) (kind sitemapKind, locs []string, truncated bool, err error) {
	dec := xml.NewDecoder(r)
	var stack []string
	var text strings.Builder
	inLoc := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if kind == 0 {
				return 0, nil, false, errors.New("adminapi: sitemap: empty document")
			}
			return kind, locs, truncated, nil
		}
		if err != nil {
			return 0, nil, false, fmt.Errorf("sitemap xml: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			name := t.Name.Local
			if len(stack) == 0 {
				switch {
				case kind != 0:
					return 0, nil, false, errors.New("adminapi: sitemap: more than one root element")
				case name == "urlset":
					kind = urlSet
				case name == "sitemapindex":
					kind = sitemapIndex
				default:
					return 0, nil, false, fmt.Errorf("adminapi: sitemap: root element <%.64s> is neither <urlset> nor <sitemapindex>", name)
				}
			}
			stack = append(stack, name)
			if len(stack) > maxXMLDepth {
				return 0, nil, false, errors.New("adminapi: sitemap: elements nested too deeply")
			}
			want := "url"
			if kind == sitemapIndex {
				want = "sitemap"
			}
			if len(stack) == 3 && name == "loc" && stack[1] == want {
				inLoc = true
				text.Reset()
			}
		case xml.CharData:
			if inLoc && text.Len() < maxURLLen+1 {
				text.Write(t)
			}
		case xml.EndElement:
			if inLoc && len(stack) == 3 {
				inLoc = false
				if loc := strings.TrimSpace(text.String()); loc != "" {
					if len(locs) >= maxLocs {
						truncated = true
					} else {
						locs = append(locs, loc)
					}
				}
			}
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
}

// limitedReader fails with errSitemapTooLarge once more than n bytes were read.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, errSitemapTooLarge
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, errSitemapTooLarge
	}
	return n, err
}

// sitemapReader returns body bounded to max bytes, gunzipped first when it
// starts with the gzip magic bytes (a .gz file or Content-Encoding the
// transport did not undo).
func sitemapReader(body io.Reader, max int64) (io.Reader, error) {
	br := bufio.NewReader(&limitedReader{r: body, n: max})
	magic, err := br.Peek(2)
	if err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("sitemap gzip: %w", err)
		}
		zr.Multistream(false)
		return &limitedReader{r: zr, n: max}, nil
	}
	return br, nil
}

// fetchSitemap fetches and parses one sitemap document.
func (s *Server) fetchSitemap(ctx context.Context, rawURL string, maxLocs int) (sitemapKind, []string, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, nil, false, fmt.Errorf("sitemap %s: %w", rawURL, err)
	}
	req.Header.Set("Accept", "application/xml, text/xml, application/gzip;q=0.9, */*;q=0.1")
	req.Header.Set("User-Agent", "PRISM-warmup")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, nil, false, fmt.Errorf("sitemap %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, nil, false, fmt.Errorf("sitemap %s: status %d", rawURL, resp.StatusCode)
	}
	r, err := sitemapReader(resp.Body, s.limits.maxBytes)
	if err != nil {
		return 0, nil, false, fmt.Errorf("sitemap %s: %w", rawURL, err)
	}
	kind, locs, truncated, err := parseSitemap(r, maxLocs)
	if err != nil {
		return 0, nil, false, fmt.Errorf("sitemap %s: %w", rawURL, err)
	}
	return kind, locs, truncated, nil
}

// checkSitemapURL accepts only absolute http(s) URLs on configured hosts.
func checkSitemapURL(sites *site.Table, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("sitemap_url is required")
	}
	if len(raw) > maxURLLen {
		return nil, fmt.Errorf("sitemap_url longer than %d bytes", maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("sitemap_url %q must be an absolute http(s) URL", raw)
	}
	if _, ok := sites.Match(u.Host); !ok {
		return nil, fmt.Errorf("sitemap_url %q is not on a configured host", raw)
	}
	return u, nil
}

// originTransport sends requests for configured hosts to their origins with
// X-Prism-Render: 1 (so the origin's own bot detection is not re-entered) and
// refuses every other destination: the admin API never becomes an SSRF tool.
type originTransport struct {
	sites *site.Table
	base  http.RoundTripper
}

func (t *originTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	origin, ok := t.sites.Origin(req.URL.Host)
	if !ok || origin == nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("adminapi: %s is not a configured host", req.URL.Host)
	}
	out := req.Clone(req.Context())
	out.Host = req.URL.Host
	out.URL = site.OriginURL(origin, req.URL)
	out.Header.Set(prerender.RenderHeader, "1")
	return t.base.RoundTrip(out)
}

// originClient is the default sitemap client.
func originClient(sites *site.Table) *http.Client {
	base := site.NewOriginTransport(30 * time.Second)
	return &http.Client{
		Transport: &originTransport{sites: sites, base: base},
		Timeout:   2 * time.Minute,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("adminapi: too many redirects")
			}
			return nil
		},
	}
}
