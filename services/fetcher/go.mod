module github.com/sluice-etl/sluice/services/fetcher

go 1.26.0

require github.com/sluice-etl/sluice/pkg v0.0.0

replace (
	github.com/sluice-etl/sluice/pkg => ../../pkg
	github.com/sluice-etl/sluice/schemas => ../../schemas
)
