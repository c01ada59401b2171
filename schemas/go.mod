module github.com/sluice-etl/sluice/schemas

go 1.26.0
