module github.com/sluice-etl/sluice/cmd/sluice

go 1.26.0

require github.com/sluice-etl/sluice/pkg v0.0.0

require (
	github.com/alecthomas/kong v1.17.0
	github.com/chromedp/cdproto v0.160.1
	github.com/chromedp/chromedp v0.23.1
	github.com/goccy/go-yaml v1.19.2
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	golang.org/x/mod v0.43.0 // indirect
)

replace (
	github.com/sluice-etl/sluice/pkg => ../../pkg
	github.com/sluice-etl/sluice/schemas => ../../schemas
)
