package site

// The built-in crawler list behind the "@crawlers", "@search", "@social" and
// "@ai" matchers. Every token is a lower-case substring of the crawler's
// User-Agent header, chosen to be specific enough that no mainstream browser
// UA contains it (so "sogou web spider" rather than "sogou", which Sogou's
// own browser carries). When adding a crawler, prefer the product token its
// operator documents, and add a case to TestBuiltinCrawlers.
//
// Sources: each operator's crawler documentation (Google "Overview of Google
// crawlers and fetchers", Bing webmaster "Which crawlers does Bing use",
// OpenAI "Overview of OpenAI Crawlers", Anthropic "Does Anthropic crawl data
// from the web", Perplexity "Perplexity Crawlers", Apple "About Applebot",
// Meta "Meta Web Crawlers", and similar pages). Some tokens (Google-Extended,
// Applebot-Extended) are robots.txt product tokens that never appear in a
// request on their own; they are kept so that a configuration naming them
// reads naturally, and they cost nothing.

// crawlerGroup is a bit set of built-in groups.
type crawlerGroup uint8

const (
	groupSearch crawlerGroup = 1 << iota
	groupSocial
	groupAI

	groupAll = groupSearch | groupSocial | groupAI
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
	"exabot",
	"petalbot", // Huawei Petal Search
	"qwantbot",
	"qwantify",
	"naver.me/spd", // Naver's Yeti
	"coccocbot",
	"mojeekbot",
	"daumoa",
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
