package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// EnvServiceTokens overrides service.tokens: a comma-separated list (keeps
// the tokens out of the file).
const EnvServiceTokens = "PRISM_SERVICE_TOKENS"

// Service is the render-service port: the prerender, Rendertron and
// EdgeComet protocols, for middlewares that call a render service.
type Service struct {
	// Address is where the port listens; empty (the default) disables it.
	Address string `toml:"address"`
	// Tokens: when set, prerender requests must carry one of them in
	// X-Prerender-Token and EdgeComet requests in X-Render-Key.
	// PRISM_SERVICE_TOKENS (comma-separated) overrides them. Empty: no
	// token asked for (allowed only on a loopback address).
	Tokens []string `toml:"tokens"`
	// AllowFrom are the CIDRs or IPs allowed on the Rendertron routes
	// (/render/<url>, /invalidate/<url>), which cannot send a token. Nil
	// (key absent): loopback only; empty: nobody.
	AllowFrom []string `toml:"allow_from"`
	// DefaultDimension names the dimension used when the User-Agent
	// matches none (and for Rendertron, which forwards none); it must
	// exist on every host. Empty: each host's first non-mobile dimension
	// (else its first).
	DefaultDimension string `toml:"default_dimension"`
}

// Enabled reports whether the service port is started.
func (s Service) Enabled() bool { return s.Address != "" }

// AllowPrefixes returns service.allow_from as prefixes: loopback (IPv4 and
// IPv6) when the key is absent. Entries that do not parse are skipped;
// Validate reports them.
func (s Service) AllowPrefixes() []netip.Prefix {
	if s.AllowFrom == nil {
		return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	out := []netip.Prefix{}
	for _, p := range s.AllowFrom {
		if pr, err := parseProxy(p); err == nil {
			out = append(out, pr)
		}
	}
	return out
}

// applyServiceEnv takes service.tokens from PRISM_SERVICE_TOKENS when it is
// set and holds at least one token.
func (c *Config) applyServiceEnv(lookupEnv func(string) (string, bool)) {
	v, ok := lookupEnv(EnvServiceTokens)
	if !ok {
		return
	}
	var tokens []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	if len(tokens) > 0 {
		c.Service.Tokens = tokens
	}
}

// validateService checks the [service] section.
func (c *Config) validateService(v *validator) {
	s := &c.Service
	if !s.Enabled() {
		return
	}
	v.address("service.address", s.Address)
	for i, t := range s.Tokens {
		key := fmt.Sprintf("service.tokens[%d]", i)
		switch {
		case strings.TrimSpace(t) == "":
			v.add(key, "must not be empty")
		case strings.ContainsAny(t, " \t\r\n,") || strings.ContainsFunc(t, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			v.add(key, "must not hold spaces, commas or control characters (it is sent as a header value)")
		}
	}
	if len(s.Tokens) == 0 && !isLoopbackAddress(s.Address) {
		v.add("service.address", "%q is not a loopback address and service.tokens is empty: set service.tokens (or %s), or listen on 127.0.0.1",
			s.Address, EnvServiceTokens)
	}
	for i, p := range s.AllowFrom {
		if _, err := parseProxy(p); err != nil {
			v.add(fmt.Sprintf("service.allow_from[%d]", i), "%q is not an IP address or CIDR", p)
		}
	}
	if name := s.DefaultDimension; name != "" {
		for i, h := range c.Hosts {
			found := false
			for _, d := range h.Dimensions {
				if strings.EqualFold(d.Name, name) {
					found = true
					break
				}
			}
			if !found {
				v.add("service.default_dimension", "%q is not a dimension of host %q (hosts[%d]): it must name a dimension of every host", name, h.Name, i)
			}
		}
	}
}
