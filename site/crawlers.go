package site

// The built-in crawler list behind the "@crawlers", "@search", "@social",
// "@ai" and "@seo" matchers. Every token is a lower-case substring of the
// crawler's User-Agent header, chosen to be specific enough that no
// mainstream browser UA contains it (so "sogou web spider" rather than "sogou", which Sogou's
// own browser carries). When adding a crawler, prefer the product token its
// operator documents, add a case to TestBuiltinCrawlers, and list the
// crawler's pattern in servedCrawlers (crawlerlist_test.go).
//
// Sources: each operator's crawler documentation (Google "Overview of Google
// crawlers and fetchers", Bing webmaster "Which crawlers does Bing use",
// OpenAI "Overview of OpenAI Crawlers", Anthropic "Does Anthropic crawl data
// from the web", Perplexity "Perplexity Crawlers", Apple "About Applebot",
// Meta "Meta Web Crawlers", and similar pages). Some tokens (Google-Extended,
// Applebot-Extended) are robots.txt product tokens that never appear in a
// request on their own; they are kept so that a configuration naming them
// reads naturally, and they cost nothing.
//
// TestCrawlerUserAgentsList checks the list against the sample user agents
// of the monperrus crawler-user-agents list (site/testdata): every sample of
// a crawler PRISM serves is detected, and HTTP libraries, uptime monitors
// and browser automation (HeadlessChrome) are not: they are no crawlers that
// index or preview a page, and rendering for them would only spend tabs.

// crawlerGroup is a bit set of built-in groups.
type crawlerGroup uint8

const (
	groupSearch crawlerGroup = 1 << iota
	groupSocial
	groupAI
	groupSEO

	groupAll = groupSearch | groupSocial | groupAI | groupSEO
)

// groupByName returns the group an "@name" matcher stands for.
func groupByName(name string) (crawlerGroup, bool) {
	switch name {
	case "@crawlers":
		return groupAll, true
	case "@search":
		return groupSearch, true
	case "@social":
		return groupSocial, true
	case "@ai":
		return groupAI, true
	case "@seo":
		return groupSEO, true
	}
	return 0, false
}

// searchCrawlers are search engines' indexers and their renderers.
var searchCrawlers = []string{
	// Google
	"googlebot", // Googlebot, Googlebot-Image, Googlebot-News, Googlebot-Video
	"google-inspectiontool",
	"storebot-google",
	"googleother",
	"adsbot-google",
	"mediapartners-google",
	"apis-google",
	"feedfetcher-google",
	"google-site-verification",
	"google-read-aloud",
	"googleproducer",
	// Microsoft
	"bingbot",
	"bingpreview",
	"adidxbot",
	"msnbot",
	// Others
	"slurp", // Yahoo
	"duckduckbot",
	"baiduspider",
	"yandexbot",
	"yandex.com/bots", // YandexMobileBot, YandexImages and the rest of Yandex's family
	"applebot",
	"seznambot",
	"sogou web spider",
	"sogou inst spider",
	"sogou news spider",
	"sogou pic spider",
	"sogou video spider",
	"sogou orion spider",
	"sogou-test-spider",
	"exabot",
	"petalbot", // Huawei Petal Search
	"qwantbot",
	"qwantify",
	"naver.me/spd", // Naver's Yeti
	"naver.me/bot", // Yeti/1.1
	"naverbot",
	"coccoc", // coccocbot-web, coccoc/1.0, imagecoccoc; Coc Coc's browser says coc_coc_browser
	"mojeekbot",
	"daumoa",
	"daum/",       // "(compatible; Daum/4.1; ...)"; Daum's apps say DaumApps
	"yisouspider", // Shenma (Alibaba)
	"mail.ru_bot",
	"bravebot", // Brave Search
	"kagibot",
	"youdaobot",
	"sosospider",
	"seekport",
	"360spider",
	"archive.org_bot",
	"ia_archiver",
}

// socialCrawlers fetch pages for link previews and cards.
var socialCrawlers = []string{
	"facebookexternalhit",
	"facebot",
	"facebookcatalog",
	"meta-externalfetcher",
	"twitterbot",
	"linkedinbot",
	"slackbot", // Slackbot-LinkExpanding
	"slack-imgproxy",
	"discordbot",
	"telegrambot",
	"whatsapp",
	"pinterestbot",
	"pinterest/0.",
	"redditbot",
	"embedly",
	"skypeuripreview",
	"vkshare",
	"iframely",
	"google-pagerenderer",
	"flipboardproxy",
	"bitlybot",
	"quora link preview",
	"(mastodon/", // "http.rb/5.1.1 (Mastodon/4.2.0; +https://host/)"
	"bluesky cardyb",
	"kakaotalk-scrap",
	"xing-contenttabreceiver",
	"xing bot",
	"yahoo link preview",
	"viber", // Viber's link previews send just "Viber"
	"bitrix link preview",
	"outbrain",
	"snap url preview service",
	"snapurlpreview", // not "snapchat": Snapchat's in-app browser says it
	"linespider",
	"meta-externalhit",
	"quora-bot",
	"google web preview",
	"developers.google.com/+/web/snippet",
	"showyoubot",
	"microsoftpreview", // Teams and Outlook link previews
	"odklbot",          // Odnoklassniki
	"bufferlinkpreviewbot",
	"discourse forum onebox",
	"mattermost-bot",
	"summalybot", // Misskey
	"mediumbot-metatagfetcher",
	"evernoterichlinkbot",
	"chatwork linkpreview",
	"dingtalkbot-linkservice",
}

// aiCrawlers collect training data or fetch pages for AI assistants.
var aiCrawlers = []string{
	// OpenAI
	"gptbot",
	"chatgpt-user",
	"oai-searchbot",
	// Anthropic
	"claudebot",
	"claude-user",
	"claude-searchbot",
	"claude-web",
	"anthropic-ai",
	// Perplexity
	"perplexitybot",
	"perplexity-user",
	// Google and Apple robots.txt tokens (see the file comment)
	"google-extended",
	"applebot-extended",
	// Others
	"ccbot", // Common Crawl
	"bytespider",
	"amazonbot",
	"cohere-ai",
	"cohere-training-data-crawler",
	"meta-externalagent",
	"meta-webindexer",
	"facebookbot", // Meta's crawler for its AI models
	"google-cloudvertexbot",
	"google-notebooklm",
	"kagi-fetcher", // Kagi's assistant and summarizer
	"linerbot",
	"tiktokspider",
	"amzn-searchbot",
	"amzn-user",
	"azureai-searchbot",
	"deepseekbot",
	"phindbot",
	"youbot",
	"duckassistbot",
	"mistralai-user",
	"diffbot",
	"ai2bot",
	"timpibot",
	"imagesiftbot",
	"omgili",
	"kangaroo bot",
	"panscient",
}

// seoCrawlers are SEO tools, site auditors and validators: operators check
// with them what crawlers get, so they must see the rendered page too. They
// crawl whole sites: leave "@seo" out of a dimension ("@search", "@social",
// "@ai" instead of "@crawlers") to spend no tabs on them.
var seoCrawlers = []string{
	"ahrefsbot",
	"ahrefssiteaudit",
	"semrushbot",
	"siteauditbot", // Semrush's site audit
	"rogerbot",     // Moz
	"dotbot",       // Moz
	"mj12bot",      // Majestic
	"screaming frog seo spider",
	"chrome-lighthouse", // Lighthouse and PageSpeed Insights
	"w3c_validator",
	"validator.nu",
	"google-structured-data-testing-tool",
	"schema-markup-validator",
	"sitebulb",
	"oncrawl/", // not IonCrawl, IONOS's crawler
	"botify",
	"contentkingapp",
	"serpstatbot",
	"dataforseobot",
	"barkrowler",
	"seokicks",
}
