package site

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// servedCrawlers are the patterns of testdata/crawler-user-agents.json whose
// every sample PRISM's built-in list detects, by the group it must land in.
var servedCrawlers = map[crawlerGroup][]string{
	groupSearch: {
		"Googlebot\\/", "Googlebot-Mobile", "Googlebot-Image", "Googlebot-News", "Googlebot-Video",
		"AdsBot-Google([^-]|$)", "AdsBot-Google-Mobile", "Feedfetcher-Google", "Mediapartners-Google",
		"APIs-Google", "Google-InspectionTool", "Storebot-Google", "GoogleOther", "bingbot", "Slurp",
		"msnbot", "exabot", "ia_archiver", "yandex\\.com\\/bots", "Baiduspider", "Mail\\.RU_Bot",
		"SeznamBot", "Yeti", "Sogou", "DuckDuckBot", "coccoc", "360Spider", "Qwantify",
		"archive\\.org_bot", "Applebot", "MojeekBot\\/", "BingPreview\\/", "Daum\\/", "YisouSpider",
		"Google-Site-Verification", "PetalBot", "Seekport", "Google-Read-Aloud",
		"YandexRenderResourcesBot\\/", "Qwantbot", "Sosospider", "YoudaoBot", "NaverBot", "BraveBot",
		"daumoa", "GoogleProducer", "Googlebot-IA\\/", "Kagibot\\/",
	},
	groupSocial: {
		"LinkedInBot", "facebookexternalhit", "Twitterbot", "Facebot", "Slack-ImgProxy", "Embedly",
		"SkypeUriPreview", "Slackbot", "redditbot", "WhatsApp", "pinterest\\.com\\/bot", "Discordbot",
		"TelegramBot", "Mastodon", "bitlybot", "FlipboardProxy", "vkShare", "outbrain", "Viber",
		"OdklBot\\/", "Linespider", "Iframely", "developers\\.google\\.com\\/\\+\\/web\\/snippet",
		"facebookcatalog\\/", "meta-externalfetcher\\/", "SummalyBot", "MicrosoftPreview\\/",
		"BufferLinkPreviewBot", "EvernoteRichLinkBot", "Mediumbot-MetaTagFetcher", "Quora-Bot",
		"DingTalkBot-LinkService", "Mattermost-Bot\\/", "Meta-ExternalHit\\/", "SnapURLPreview\\/",
		"Yahoo Link Preview", "Google Web Preview", "Snap URL Preview Service", "Xing Bot",
		"Chatwork LinkPreview", "Discourse Forum Onebox",
	},
	groupAI: {
		"panscient", "CCBot", "omgili", "Diffbot\\/", "Bytespider", "Amazonbot", "GPTBot", "ChatGPT-User",
		"OAI-SearchBot", "YouBot", "ImagesiftBot", "PerplexityBot\\/", "[cC]laude[bB]ot",
		"meta-externalagent\\/", "TikTokSpider", "Claude-Web", "anthropic-ai", "Claude-User",
		"Claude-SearchBot", "Google-Extended", "cohere-ai", "Timpibot", "Perplexity-User",
		"meta-webindexer", "DuckAssistBot", "MistralAI-User", "Amzn-SearchBot", "Amzn-User",
		"AzureAI-SearchBot", "FacebookBot", "Google-NotebookLM", "kagi-fetcher", "PhindBot",
		"DeepSeekBot", "AI2Bot", "cohere-training-data-crawler", "Google-CloudVertexBot", "LinerBot\\/",
		"Kangaroo Bot",
	},
	groupSEO: {
		"MJ12bot", "dotbot", "Ahrefs(Bot|SiteAudit)", "rogerbot", "S[eE][mM]rushBot", "Bark[rR]owler",
		"botify", "SEOkicks", "Google-Structured-Data-Testing-Tool", "W3C_Validator", "Validator\\.nu",
		"Chrome-Lighthouse", "serpstatbot\\/", "DataForSeoBot", "OnCrawl\\/", "sitebulb",
		"contentkingapp", "Schema-Markup-Validator", "SiteAuditBot\\/", "Screaming Frog SEO Spider",
	},
}

// namingCrawlers are patterns whose samples (some of them) are detected
// only because they name a crawler PRISM serves ("like Googlebot", "like
// FeedFetcher-Google", "archive.org_bot; Wayback Machine"): expected of
// substring matching, and harmless.
var namingCrawlers = []string{"acapbot", "Feedly", "Feedspot", "Gwene", "SentiBot", "FreshRSS", "s4a-probe-bot\\/", "Wayback"}

// notCrawlers are patterns none of whose samples may be detected: HTTP
// libraries and command-line clients, uptime monitors, and browsers
// driven by scripts. The tags below extend this to their whole classes.
var notCrawlers = []string{
	"^curl", "Go-http-client", "python-requests", "[wW]get", "Python-urllib", "okhttp", "axios", "node-fetch",
	"UptimeRobot", "[pP]ingdom", "StatusCake", "Site24x7", "Uptime-Kuma", "Better Uptime Bot", "BetterUptimeBot",
	"NewRelicSynthetics", "DatadogSynthetics", "Checkly", "check_http", "Cloudflare-Healthchecks", "SentryUptimeBot\\/",
	"HeadlessChrome", "PhantomJS", "MetaIAB Facebook",
}

// notCrawlerTags are the classes whose samples must not be detected, but
// for the validators and auditors of servedCrawlers the list tags
// "monitoring".
var notCrawlerTags = []string{"http-library", "monitoring", "browser-automation"}

type uaPattern struct {
	Pattern   string   `json:"pattern"`
	Tags      []string `json:"tags"`
	Instances []string `json:"instances"`
}

func loadCrawlerUserAgents(t *testing.T) []uaPattern {
	t.Helper()
	b, err := os.ReadFile("testdata/crawler-user-agents.json")
	if err != nil {
		t.Fatal(err)
	}
	var list []uaPattern
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("testdata/crawler-user-agents.json: %v", err)
	}
	return list
}

// TestCrawlerUserAgentsList checks the built-in list against the vendored
// samples of the monperrus crawler-user-agents list: every sample of a
// served crawler is detected in its group, no sample of an HTTP library,
// monitor or automated browser is, and every other detected pattern is
// accounted for, so that a token that starts matching more than it should
// fails here.
func TestCrawlerUserAgentsList(t *testing.T) {
	list := loadCrawlerUserAgents(t)
	byPattern := map[string]uaPattern{}
	for _, p := range list {
		byPattern[p.Pattern] = p
	}
	ts := newTokenSet()
	detect := func(ua string) crawlerGroup { return ts.scan(appendLowerASCII(nil, ua)) }

	served := map[string]bool{}
	for g, patterns := range servedCrawlers {
		for _, pat := range patterns {
			served[pat] = true
			p, ok := byPattern[pat]
			if !ok {
				t.Errorf("pattern %q is not in the list (renamed upstream?)", pat)
				continue
			}
			for _, ua := range p.Instances {
				if got := detect(ua); got&g == 0 {
					t.Errorf("%q: %q detected as %b, want group %b", pat, ua, got, g)
				}
			}
		}
	}
	not := map[string]bool{}
	for _, pat := range notCrawlers {
		not[pat] = true
		if _, ok := byPattern[pat]; !ok {
			t.Errorf("not-crawler pattern %q is not in the list", pat)
		}
	}
	naming := map[string]bool{}
	for _, pat := range namingCrawlers {
		naming[pat] = true
	}

	for _, p := range list {
		if served[p.Pattern] {
			continue
		}
		mustNot := not[p.Pattern]
		for _, tag := range p.Tags {
			for _, nt := range notCrawlerTags {
				mustNot = mustNot || tag == nt
			}
		}
		for _, ua := range p.Instances {
			got := detect(ua)
			switch {
			case got != 0 && mustNot:
				t.Errorf("%q (%s): %q detected as a crawler (%b); it is no crawler", p.Pattern, strings.Join(p.Tags, ","), ua, got)
			case got != 0 && !naming[p.Pattern]:
				t.Errorf("%q (%s): %q detected (%b) but not listed: add the pattern to servedCrawlers in its group, or make the token that matched it more specific",
					p.Pattern, strings.Join(p.Tags, ","), ua, got)
			}
		}
	}

	// The named misses, by their real sample user agents.
	for _, tt := range []struct {
		ua   string
		want crawlerGroup
	}{
		{"Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", groupSEO},
		{"Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse", groupSEO},
		{"Screaming Frog SEO Spider/20.0", groupSEO},
		{"rogerbot/1.2 (https://moz.com/help/guides/moz-procedures/what-is-rogerbot, rogerbot-crawler+aardwolf-production-crawler-67@moz.com)", groupSEO},
		{"W3C_Validator/1.3 http://validator.w3.org/services", groupSEO},
		{"Mozilla/5.0 (compatible; FacebookBot/1.0; +https://developers.facebook.com/docs/sharing/webmasters/facebookbot/)", groupAI},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/41.0.2272.118 Safari/537.36 (compatible; Google-Read-Aloud; +https://developers.google.com/search/docs/crawling-indexing/overview-google-crawlers)", groupSearch},
		{"Mozilla/5.0 (compatible; Yeti/1.1; +http://naver.me/bot)", groupSearch},
		{"Mozilla/5.0 (compatible; coccoc/1.0; +http://help.coccoc.com/searchengine)", groupSearch},
		{"Mozilla/5.0 (compatible; Daum/4.1; +http://cs.daum.net/faq/15/4118.html?faqId=28966)", groupSearch},
		{"Sogou News Spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)", groupSearch},
		{"Mozilla/5.0 (compatible; Yahoo Link Preview; https://help.yahoo.com/kb/mail/yahoo-link-preview-SLN23615.html)", groupSocial},
		{"Viber", groupSocial},
		{"kagi-fetcher/1.0", groupAI},
		{"BraveBot / Mozilla/5.0 (compatible; BraveBot/1.0)", groupSearch},
		// Not crawlers: browsers of people, including those in apps whose
		// names are close to a crawler's.
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/117.0.0.0 Safari/537.36 coc_coc_browser/117.0.228", 0},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Snapchat/12.60.0.37 (like Safari/8614.1.25.0.31, panda)", 0},
		{"Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.0.0 Mobile Safari/537.36 DaumApps/4.9.3", 0},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", 0},
		{"Wget/1.21.4", 0},
		{"Go-http-client/2.0", 0},
		{"python-requests/2.32.3", 0},
		{"curl/8.11.1", 0},
	} {
		if got := detect(tt.ua); got != tt.want {
			t.Errorf("%q: detected as %b, want %b", tt.ua, got, tt.want)
		}
	}
}
