package site

import (
	"strings"
	"testing"
)

const (
	uaChrome       = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
	uaIPhone       = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
	uaFirefox      = "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0"
	uaGoogleDesk   = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) Chrome/126.0.6478.126 Safari/537.36"
	uaGoogleMobile = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
	uaBing         = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
	uaFacebook     = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
	uaGPTBot       = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
	uaClaude       = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)"
	uaYandex       = "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)"
	uaSlack        = "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"
)

func TestDetect(t *testing.T) {
	tab := testTable(t)
	h1, _ := tab.ByID(1)
	h2, _ := tab.ByID(2)
	tests := []struct {
		name string
		h    *Host
		ua   string
		want string // dimension name; "" none
	}{
		{"person chrome", h1, uaChrome, ""},
		{"person iphone", h1, uaIPhone, ""},
		{"person firefox", h1, uaFirefox, ""},
		{"empty", h1, "", ""},
		{"first match wins: mobile regexp before desktop substring", h1, uaGoogleMobile, "mobile"},
		{"substring", h1, uaGoogleDesk, "desktop"},
		{"substring case-insensitive", h1, "GOOGLEBOT", "desktop"},
		{"plain string case-insensitive", h1, "my iphone-bot/1", "mobile"},
		{"regexp case-insensitive", h1, "Mobile GoogleBot", "mobile"},
		{"@social", h1, uaFacebook, "desktop"},
		{"@ai", h1, uaGPTBot, "ai"},
		{"@ai claude", h1, uaClaude, "ai"},
		{"@crawlers catches search", h1, uaBing, "other"},
		{"@search on other host", h2, uaYandex, "all"},
		{"@search ignores social", h2, uaSlack, ""},
		{"@search ignores ai", h2, uaGPTBot, ""},
		{"@crawlers catches seo", h1, "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "other"},
		{"@search ignores seo", h2, "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", ""},
		{"@crawlers catches screaming frog", h1, "Screaming Frog SEO Spider/20.0", "other"},
		{"long UA", h1, strings.Repeat("x", 5000) + "googlebot", "desktop"},
		{"nil host", nil, uaGoogleDesk, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, ok := tab.Detect(tt.h, tt.ua)
			got := ""
			if ok {
				got = d.Name
			}
			if got != tt.want {
				t.Errorf("Detect(%q) = %q, want %q", tt.ua, got, tt.want)
			}
		})
	}
	// A host value not from the table (a copy) is looked up by id.
	cp := Host{ID: 1}
	if d, ok := tab.Detect(&cp, uaGoogleDesk); !ok || d.Name != "desktop" {
		t.Errorf("Detect on a foreign Host = %v, %v", d, ok)
	}
}

// TestBuiltinCrawlers checks real user agents of each group, and that
// mainstream browsers and in-app browsers match none.
func TestBuiltinCrawlers(t *testing.T) {
	ts := newTokenSet()
	tests := []struct {
		ua   string
		want crawlerGroup
	}{
		{uaGoogleDesk, groupSearch},
		{uaGoogleMobile, groupSearch},
		{"Mozilla/5.0 (compatible; Google-InspectionTool/1.0;)", groupSearch},
		{"Mozilla/5.0 (X11; Linux x86_64; Storebot-Google/1.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.88 Safari/537.36", groupSearch},
		{uaBing, groupSearch},
		{"Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)", groupSearch},
		{"DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", groupSearch},
		{"Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", groupSearch},
		{uaYandex, groupSearch},
		{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)", groupSearch},
		{"Mozilla/5.0 (compatible; SeznamBot/4.0; +https://o-seznam.cz/napoveda/vyhledavani/en/seznambot-crawler/)", groupSearch},
		{"Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)", groupSearch},
		{"Mozilla/5.0 (compatible; Exabot/3.0; +http://www.exabot.com/go/robot)", groupSearch},
		{"Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)", groupSearch},
		{"Mozilla/5.0 (compatible; Qwantbot/1.0_4193332; +https://help.qwant.com/bot/)", groupSearch},
		{uaFacebook, groupSocial},
		{"Twitterbot/1.0", groupSocial},
		{"LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)", groupSocial},
		{uaSlack, groupSocial},
		{"Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", groupSocial},
		{"TelegramBot (like TwitterBot)", groupSocial},
		{"WhatsApp/2.23.20.0 A", groupSocial},
		{"Pinterestbot/1.0 (+https://www.pinterest.com/bot.html)", groupSocial},
		{"Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)", groupSocial},
		{"Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)", groupSocial},
		{"Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5", groupSocial},
		{"Mozilla/5.0 (compatible; vkShare; +http://vk.com/dev/Share)", groupSocial},
		{"Iframely/1.3.1 (+https://iframely.com/docs/about)", groupSocial},
		{uaGPTBot, groupAI},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot", groupAI},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot", groupAI},
		{uaClaude, groupAI},
		{"Claude-User/1.0", groupAI},
		{"Claude-SearchBot/1.0", groupAI},
		{"anthropic-ai", groupAI},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)", groupAI},
		{"Perplexity-User/1.0", groupAI},
		{"CCBot/2.0 (https://commoncrawl.org/faq/)", groupAI},
		{"Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)", groupAI},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot) Chrome/119.0.6045.214 Safari/537.36", groupAI},
		{"cohere-ai", groupAI},
		{"meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)", groupAI},
		{"Mozilla/5.0 (compatible; YouBot (+http://www.you.com))", groupAI},
		{"DuckAssistBot/1.0; (+http://duckduckgo.com/duckassistbot.html)", groupAI},
		{"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; MistralAI-User/1.0; +https://docs.mistral.ai/robots)", groupAI},
		{"Mozilla/5.0 (compatible; Googlebot/2.1) GPTBot Twitterbot", groupSearch | groupSocial | groupAI},
		{"Mozilla/5.0 (compatible; Googlebot/2.1) GPTBot Twitterbot AhrefsBot/7.0", groupAll},
		{uaChrome, 0},
		{uaIPhone, 0},
		{uaFirefox, 0},
		{"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", 0},
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0", 0},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.41.104]", 0},
		{"Mozilla/5.0 (Windows NT 10.0; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/86.0.4240.198 Safari/537.36 SE 2.X MetaSr 1.0", 0},
		{"curl/8.5.0", 0},
		{"", 0},
	}
	for _, tt := range tests {
		t.Run(tt.ua, func(t *testing.T) {
			if got := ts.scan(appendLowerASCII(nil, tt.ua)); got != tt.want {
				t.Errorf("groups = %03b, want %03b", got, tt.want)
			}
		})
	}
}

func TestDetectNoAlloc(t *testing.T) {
	tab := testTable(t)
	h, _ := tab.ByID(1)
	for _, ua := range []string{uaChrome, uaGoogleDesk, uaGPTBot} {
		if n := testing.AllocsPerRun(100, func() { tab.Detect(h, ua) }); n != 0 {
			t.Errorf("Detect(%q) allocates %v times", ua, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { tab.Match("WWW.Example.com:443") }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { tab.IsStatic("/assets/App.CSS") }); n != 0 {
		t.Errorf("IsStatic allocates %v times", n)
	}
}

// BenchmarkDetect measures a typical configuration (plain strings and the
// built-in groups) and, separately, the cost a user regexp adds.
func BenchmarkDetect(b *testing.B) {
	origin := mustURL(b, "http://o.test")
	tab, err := New(Options{Hosts: []Host{
		{ID: 1, Name: "typical.test", Origin: origin, Dimensions: []Dimension{
			{ID: 1, Name: "mobile", MatchUA: []string{"iphone-bot", "android-bot"}, Mobile: true},
			{ID: 2, Name: "desktop", MatchUA: []string{"@crawlers"}},
		}},
		{ID: 2, Name: "regexp.test", Origin: origin, Dimensions: []Dimension{
			{ID: 1, Name: "mobile", MatchUA: []string{"re:mobile.*googlebot"}, Mobile: true},
			{ID: 2, Name: "desktop", MatchUA: []string{"@crawlers"}},
		}},
	}})
	if err != nil {
		b.Fatal(err)
	}
	for _, host := range []string{"typical.test", "regexp.test"} {
		h, _ := tab.Match(host)
		for _, bc := range []struct{ name, ua string }{
			{"person", uaChrome},
			{"googlebot", uaGoogleDesk},
			{"gptbot", uaGPTBot},
		} {
			b.Run(host+"/"+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					tab.Detect(h, bc.ua)
				}
			})
		}
	}
}

// TestDetectRemembered checks the detection cache gives the same answers as
// a fresh match, per host, for repeated, long and unmatched user agents.
func TestDetectRemembered(t *testing.T) {
	tab, err := New(Options{Hosts: []Host{
		{ID: 1, Name: "a.test", Origin: mustURL(t, "http://127.0.0.1:1"), Dimensions: []Dimension{
			{ID: 1, Name: "bots", MatchUA: []string{"@crawlers"}},
		}},
		{ID: 2, Name: "b.test", Origin: mustURL(t, "http://127.0.0.1:2"), Dimensions: []Dimension{
			{ID: 7, Name: "bing-only", MatchUA: []string{"bingbot"}},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := tab.Match("a.test")
	b, _ := tab.Match("b.test")
	long := "Mozilla/5.0 " + strings.Repeat("x", 2*maxCachedUA) + " Googlebot/2.1"
	tests := []struct {
		host   *Host
		ua     string
		wantID int // 0: no dimension
	}{
		{a, "Googlebot/2.1", 1},
		{b, "Googlebot/2.1", 0},
		{a, "bingbot/2.0", 1},
		{b, "bingbot/2.0", 7},
		{a, "Mozilla/5.0 Firefox/130.0", 0},
		{a, long, 1},
		{b, long, 0},
	}
	for round := range 3 {
		for _, tc := range tests {
			d, ok := tab.Detect(tc.host, tc.ua)
			got := 0
			if ok {
				got = d.ID
			}
			if got != tc.wantID {
				t.Errorf("round %d: Detect(%s, %.30q) = %d, want %d", round, tc.host.Name, tc.ua, got, tc.wantID)
			}
		}
	}
}
