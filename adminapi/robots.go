package adminapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// maxRobotsSitemaps bounds the Sitemap: lines of robots.txt a warmup takes.
const maxRobotsSitemaps = 1000

// warmupRoots returns the sitemaps a warmup of raw starts from: raw itself,
// or, when raw is a site root ("https://host" or "https://host/") or a
// robots.txt URL, the sitemaps that host's /robots.txt lists on configured
// hosts (fromRobots). A robots.txt that cannot be fetched or lists none
// is an error.
func (s *Server) warmupRoots(ctx context.Context, raw string) (roots []string, fromRobots bool, err error) {
	u, err := checkSitemapURL(s.opts.Sites, raw)
	if err != nil {
		return nil, false, err
	}
	if u.RawQuery != "" || (u.Path != "" && u.Path != "/" && u.Path != "/robots.txt") {
		return []string{raw}, false, nil
	}
	robots := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/robots.txt"}).String()
	locs, err := s.fetchRobots(ctx, robots)
	if err != nil {
		return nil, true, err
	}
	for _, loc := range locs {
		su, err := checkSitemapURL(s.opts.Sites, loc)
		if err != nil {
			s.opts.Logger.Info("admin: warmup: robots.txt sitemap ignored", "robots", robots, "sitemap", loc, "reason", err)
			continue
		}
		roots = append(roots, su.String())
	}
	if len(roots) == 0 {
		return nil, true, fmt.Errorf("robots.txt %s lists no sitemap on a configured host", robots)
	}
	s.opts.Logger.Info("admin: warmup sitemaps from robots.txt", "robots", robots, "sitemaps", len(roots))
	return roots, true, nil
}

// fetchRobots fetches a robots.txt (through the sitemap client, bounded
// like a sitemap) and returns the values of its Sitemap: lines.
func (s *Server) fetchRobots(ctx context.Context, rawURL string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("robots.txt %s: %w", rawURL, err)
	}
	req.Header.Set("Accept", "text/plain, */*;q=0.1")
	req.Header.Set("User-Agent", "PRISM-warmup")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("robots.txt %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("robots.txt %s: status %d", rawURL, resp.StatusCode)
	}
	r, err := sitemapReader(resp.Body, s.limits.maxBytes)
	if err != nil {
		return nil, fmt.Errorf("robots.txt %s: %w", rawURL, err)
	}
	locs, err := parseRobotsSitemaps(r)
	if err != nil {
		return nil, fmt.Errorf("robots.txt %s: %w", rawURL, err)
	}
	return locs, nil
}

// parseRobotsSitemaps returns the Sitemap: values of a robots.txt (the
// field name is case-insensitive, comments are dropped), at most
// maxRobotsSitemaps of them. Lines longer than maxURLLen are skipped.
func parseRobotsSitemaps(r io.Reader) ([]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var locs []string
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "sitemap") {
			continue
		}
		value = strings.TrimSpace(value)
		if value == "" || len(value) > maxURLLen {
			continue
		}
		locs = append(locs, value)
		if len(locs) >= maxRobotsSitemaps {
			break
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return nil, err
	}
	return locs, nil
}
