package site

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// DefaultStripParams returns the tracking parameters Normalize removes when
// Options.StripParams is nil. Entries ending in "*" are prefixes.
func DefaultStripParams() []string {
	return []string{
		"utm_*",                                        // Google Analytics campaign tags
		"gclid", "gbraid", "wbraid", "dclid", "gclsrc", // Google Ads
		"_ga", "_gl", // Google cross-domain linking
		"fbclid",          // Facebook
		"msclkid",         // Microsoft Ads
		"yclid", "ysclid", // Yandex
		"twclid",           // X/Twitter
		"ttclid",           // TikTok
		"li_fat_id",        // LinkedIn
		"igshid",           // Instagram
		"mc_cid", "mc_eid", // Mailchimp
		"_hsenc", "_hsmi", "__hssc", "__hstc", "__hsfp", "hsctatracking", // HubSpot
		"mkt_tok",                   // Marketo
		"oly_anon_id", "oly_enc_id", // Omeda
		"vero_id", "vero_conv", // Vero
		"wickedid",           // Wicked Reports
		"ref_src", "ref_url", // Twitter embeds
		"srsltid", // Google Merchant Center
		"s_cid",   // Adobe
	}
}

// DefaultStaticExtensions returns the extensions IsStatic reports when
// Options.StaticExtensions is nil. Sitemaps, feeds and robots.txt (.xml,
// .txt) are static too: crawlers want the origin's own files.
func DefaultStaticExtensions() []string {
	return []string{
		".js", ".mjs", ".css", ".map", ".wasm",
		".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg", ".ico", ".bmp", ".tif", ".tiff", ".heic",
		".woff", ".woff2", ".ttf", ".otf", ".eot",
		".mp4", ".webm", ".ogg", ".ogv", ".mov", ".avi", ".m4v", ".mp3", ".wav", ".flac", ".aac", ".m4a", ".opus",
		".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".csv", ".rtf",
		".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar", ".dmg", ".exe", ".apk", ".iso",
		".json", ".xml", ".txt", ".rss", ".atom", ".webmanifest",
	}
}

// maxExtLen bounds static extensions (dot included), so IsStatic can
// lower-case into a small stack buffer.
const maxExtLen = 16

// stripRule is one compiled StripParams entry.
type stripRule struct {
	name   string // lower case
	prefix bool
}

// IsStatic reports whether path names a static asset (by extension of its
// last segment, case-insensitive).
func (t *Table) IsStatic(path string) bool {
	slash := strings.LastIndexByte(path, '/')
	dot := strings.LastIndexByte(path, '.')
	if dot <= slash || len(path)-dot > maxExtLen {
		return false
	}
	var buf [maxExtLen]byte
	ext := appendLowerASCII(buf[:0], path[dot:])
	return t.static[string(ext)]
}

// stripped reports whether the (decoded) query key is a tracking parameter.
func (t *Table) stripped(key string) bool {
	for _, r := range t.strip {
		if len(key) < len(r.name) {
			continue
		}
		if r.prefix {
			if strings.EqualFold(key[:len(r.name)], r.name) {
				return true
			}
		} else if len(key) == len(r.name) && strings.EqualFold(key, r.name) {
			return true
		}
	}
	return false
}

// Normalize returns the cache form of u: its escaped path (cleaned, never
// escaping the root) and its query with parameters sorted and tracking
// parameters removed, e.g. "/a/b?x=1&y=2". It fails for paths that escape
// the root or hold NUL bytes or invalid escapes.
//
// The form is canonical in the sense of RFC 3986 section 6.2.2: escapes of
// unreserved characters are decoded, other escapes get upper-case hex, and
// bytes that may not appear raw are escaped, so equal URLs give equal
// strings. Dot segments are resolved and repeated slashes collapsed; a
// trailing slash is kept as given. The fragment is dropped, but for a
// hashbang (#!x), which ?_escaped_fragment_=x also becomes. Normalize is
// idempotent: normalizing its output (parsed as a URL) returns it unchanged.
func (t *Table) Normalize(u *url.URL) (string, error) {
	if u == nil {
		return "", fmt.Errorf("%w: no url", ErrInvalidURL)
	}
	var b strings.Builder
	rawPath := u.EscapedPath()
	if u.Opaque != "" {
		rawPath = u.Opaque
	}
	hashbang := strings.HasPrefix(u.Fragment, "!")
	if u.RawQuery == "" && !hashbang && isCanonicalPath(rawPath) {
		return rawPath, nil // what writePath would build, without the copy
	}
	b.Grow(len(rawPath) + len(u.RawQuery) + 1)
	if err := writePath(&b, rawPath); err != nil {
		return "", err
	}
	frag := ""
	if u.RawQuery != "" {
		frag = t.writeQuery(&b, u.RawQuery)
	}
	if frag == "" && hashbang {
		frag = u.Fragment[1:] // a key that already holds one (#!/x)
	}
	if frag != "" {
		// The AJAX crawling scheme: ?_escaped_fragment_=/x asks for the
		// page at #!/x, which is what renders (and is cached).
		b.WriteByte('#')
		b.WriteString((&url.URL{Fragment: "!" + frag}).EscapedFragment())
	}
	return b.String(), nil
}

// writePath writes the canonical form of the escaped path p.
func writePath(b *strings.Builder, p string) error {
	// Segments are canonicalized one by one into a stack; ".." pops.
	var segBuf [32]string
	segs := segBuf[:0]
	trailing := false
	for rest := p; ; {
		seg, more, found := strings.Cut(rest, "/")
		rest = more
		canon, err := canonicalSegment(seg)
		if err != nil {
			return err
		}
		trailing = false
		switch canon {
		case "":
			trailing = true // empty segment: a leading, repeated or trailing slash
		case ".":
			trailing = true
		case "..":
			if len(segs) == 0 {
				return fmt.Errorf("%w: path %q escapes the root", ErrInvalidURL, p)
			}
			segs = segs[:len(segs)-1]
			trailing = true
		default:
			segs = append(segs, canon)
		}
		if !found {
			break
		}
	}
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if len(segs) == 0 || trailing {
		b.WriteByte('/')
	}
	return nil
}

// isCanonicalPath reports whether writePath would write p unchanged. It
// answers for the common simple paths only ("/", "/a/b", "/a/b/"): a
// leading slash, no empty, "." or ".." segments, and only characters that
// may appear raw in a segment (no escapes); anything else reports false.
func isCanonicalPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if !isPathChar(p[i]) {
				return false
			}
			continue
		}
		switch p[segStart:i] {
		case "":
			if i < len(p) { // an empty segment before the end: "//"
				return false
			}
		case ".", "..":
			return false
		}
		segStart = i + 1
	}
	return true
}

// canonicalSegment returns the canonical escaped form of one path segment.
// It returns seg itself when seg is already canonical (the common case), so
// it does not allocate then.
func canonicalSegment(seg string) (string, error) {
	i := 0
	for ; i < len(seg); i++ {
		c := seg[i]
		if c == '%' {
			if i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2]) {
				return "", fmt.Errorf("%w: invalid escape in path segment %q", ErrInvalidURL, seg)
			}
			v := unhex(seg[i+1])<<4 | unhex(seg[i+2])
			if v == 0 {
				return "", fmt.Errorf("%w: NUL in path", ErrInvalidURL)
			}
			if isUnreserved(v) || isLowerHex(seg[i+1]) || isLowerHex(seg[i+2]) {
				break
			}
			i += 2
			continue
		}
		if c == 0 {
			return "", fmt.Errorf("%w: NUL in path", ErrInvalidURL)
		}
		if !isPathChar(c) {
			break
		}
	}
	if i == len(seg) {
		return seg, nil
	}
	var b strings.Builder
	b.Grow(len(seg) + 8)
	b.WriteString(seg[:i])
	for ; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c == '%':
			if i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2]) {
				return "", fmt.Errorf("%w: invalid escape in path segment %q", ErrInvalidURL, seg)
			}
			v := unhex(seg[i+1])<<4 | unhex(seg[i+2])
			if v == 0 {
				return "", fmt.Errorf("%w: NUL in path", ErrInvalidURL)
			}
			writeCanonicalEscape(&b, v)
			i += 2
		case c == 0:
			return "", fmt.Errorf("%w: NUL in path", ErrInvalidURL)
		case isPathChar(c):
			b.WriteByte(c)
		default:
			writeEscape(&b, c)
		}
	}
	return b.String(), nil
}

// writeQuery writes "?" and the canonical, sorted, stripped form of the raw
// query q, or nothing when no parameter remains. Invalid escapes in the query
// are kept literally (as "%25"): origins differ in how they read them, and a
// crawler should get the page, not an error.
//
// It returns the value of an _escaped_fragment_ parameter (decoded), which
// it leaves out of the query.
func (t *Table) writeQuery(b *strings.Builder, q string) (fragment string) {
	type param struct {
		key, value string // canonical escaped forms
		eq         bool   // "key=" rather than "key"
	}
	var pbuf [16]param
	params := pbuf[:0]
	for rest := q; rest != ""; {
		var part string
		part, rest, _ = strings.Cut(rest, "&")
		if part == "" {
			continue
		}
		k, v, eq := strings.Cut(part, "=")
		if k == "" && !eq {
			continue
		}
		dk, err := url.QueryUnescape(k)
		if err != nil {
			dk = k
		}
		if dk == "_escaped_fragment_" {
			if fv, err := url.QueryUnescape(v); err == nil {
				fragment = fv
			}
			continue
		}
		if t.stripped(dk) {
			continue
		}
		params = append(params, param{key: canonicalQueryPart(k), value: canonicalQueryPart(v), eq: eq})
	}
	if len(params) == 0 {
		return fragment
	}
	slices.SortStableFunc(params, func(a, b param) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		if c := strings.Compare(a.value, b.value); c != 0 {
			return c
		}
		switch {
		case a.eq == b.eq:
			return 0
		case !a.eq:
			return -1
		}
		return 1
	})
	b.WriteByte('?')
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.key)
		if p.eq {
			b.WriteByte('=')
			b.WriteString(p.value)
		}
	}
	return fragment
}

// canonicalQueryPart returns the canonical escaped form of a query key or
// value. It returns s itself when it is already canonical.
func canonicalQueryPart(s string) string {
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				break
			}
			v := unhex(s[i+1])<<4 | unhex(s[i+2])
			if isUnreserved(v) || isLowerHex(s[i+1]) || isLowerHex(s[i+2]) {
				break
			}
			i += 2
			continue
		}
		if !isQueryChar(c) {
			break
		}
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			writeCanonicalEscape(&b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case c != '%' && isQueryChar(c):
			b.WriteByte(c)
		default:
			writeEscape(&b, c)
		}
	}
	return b.String()
}

// writeCanonicalEscape writes the decoded byte v: raw when unreserved,
// otherwise as an upper-case escape (a reserved character keeps its escape,
// which may carry meaning, e.g. "%2F" in a path segment).
func writeCanonicalEscape(b *strings.Builder, v byte) {
	if isUnreserved(v) {
		b.WriteByte(v)
		return
	}
	writeEscape(b, v)
}

func writeEscape(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&15])
}

// isUnreserved reports RFC 3986 unreserved characters.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isPathChar reports characters that may appear raw in a path segment
// (pchar minus the percent sign).
func isPathChar(c byte) bool {
	if isUnreserved(c) {
		return true
	}
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@':
		return true
	}
	return false
}

// isQueryChar reports characters that may appear raw in a query key or value
// ('&' and '=' are structural and never reach here raw).
func isQueryChar(c byte) bool {
	if isUnreserved(c) {
		return true
	}
	switch c {
	case '!', '$', '\'', '(', ')', '*', '+', ',', ';', ':', '@', '/', '?':
		return true
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isLowerHex(c byte) bool { return 'a' <= c && c <= 'f' }

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// Resolve parses raw, either a path ("/page?x=1") resolved against h, or an
// absolute http(s) URL whose host must be h (when h is non-nil) or any
// configured host (when h is nil). It returns the host and normalized URL.
// A path with h nil resolves against the only host when exactly one is
// configured, and fails with ErrUnknownHost otherwise.
func (t *Table) Resolve(raw string, h *Host) (*Host, string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, "", fmt.Errorf("%w: empty url", ErrInvalidURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	switch {
	case u.Scheme == "" && u.Host == "":
		if !strings.HasPrefix(raw, "/") {
			return nil, "", fmt.Errorf("%w: %q: want a path starting with / or an absolute http(s) URL", ErrInvalidURL, raw)
		}
		if h == nil {
			if len(t.hosts) != 1 {
				return nil, "", fmt.Errorf("%w: a path needs a host when several are configured", ErrUnknownHost)
			}
			h = t.hosts[0]
		}
	default:
		if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
			return nil, "", fmt.Errorf("%w: %q: want an http or https URL", ErrInvalidURL, raw)
		}
		if u.User != nil {
			return nil, "", fmt.Errorf("%w: %q: user info not allowed", ErrInvalidURL, raw)
		}
		uh, ok := t.Match(u.Host)
		if !ok || (h != nil && uh.ID != h.ID) {
			return nil, "", fmt.Errorf("%w: %q", ErrUnknownHost, u.Host)
		}
		h = uh
	}
	if th, ok := t.byID[h.ID]; ok {
		h = th
	}
	n, err := t.Normalize(u)
	if err != nil {
		return nil, "", err
	}
	return h, n, nil
}

// EscapesRoot reports whether the escaped path p, decoded up to three times
// (so %252e%252e counts too), climbs above "/" with ".." segments, holds a
// NUL or a backslash, or cannot be decoded at all. The admin API refuses
// such paths outright (a traversal attempt); Normalize, for crawlers,
// resolves ".." within the root instead.
func EscapesRoot(p string) bool {
	for range 3 {
		if !strings.Contains(p, "%") {
			break
		}
		d, err := url.PathUnescape(p)
		if err != nil {
			return true
		}
		p = d
	}
	if strings.ContainsAny(p, "\x00\\") {
		return true
	}
	depth := 0
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			if depth == 0 {
				return true
			}
			depth--
		default:
			depth++
		}
	}
	return false
}
