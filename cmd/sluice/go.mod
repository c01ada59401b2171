module github.com/sluice-etl/sluice/cmd/sluice

go 1.26.0

require github.com/sluice-etl/sluice/pkg v0.0.0

require golang.org/x/mod v0.43.0 // indirect

replace (
	github.com/sluice-etl/sluice/pkg => ../../pkg
	github.com/sluice-etl/sluice/schemas => ../../schemas
)
