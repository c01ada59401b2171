package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"strings"
	"time"
)

// waitsResult is the sensor process measured with n runs waiting.
type waitsResult struct {
	waiting      int
	rssKB        int64 // median over the window
	rssMaxKB     int64
	hwmKB        int64
	goroutines   int64 // median
	goroutineMax int64
	openFDs      int64
	heapInuse    int64
	goSys        int64
	deliveries   float64 // redeliveries handled per second during the window
	pokes        float64 // source requests per second during the window
}

// measureWaits publishes waiting runs in stages (100, 1,000, 10,000) against a source that
// answers 404 and samples the one sensor process once a second over one poke interval per stage.
func measureWaits(ctx context.Context, bin, dir string, pipelines, dates int, poke time.Duration) ([]waitsResult, error) {
	b, err := startBroker(dir + "/nats-waits")
	if err != nil {
		return nil, err
	}
	defer b.close()
	src, err := startSource()
	if err != nil {
		return nil, err
	}
	defer src.srv.Close()
	var cfg strings.Builder
	for i := 0; i < pipelines; i++ {
		fmt.Fprintf(&cfg, `  - name: p%04d
    source:
      url: %s/p%04d/{ds}.csv
    sensor:
      poke_interval: %s
      timeout: 24h
    lease:
      ttl: %s
`, i, src.url, i, poke, 4*poke)
	}
	config, err := writeConfig(dir, "waits.yaml", cfg.String())
	if err != nil {
		return nil, err
	}
	p, err := startSensor(bin, dir, config, b.ns.ClientURL())
	if err != nil {
		return nil, err
	}
	defer p.stop()

	// Runs in request order: the first date of every pipeline (each takes its pipeline's lease
	// and pokes the source), then the other dates (queued behind those leases).
	type run struct {
		pipeline string
		ds       string
	}
	var runs []run
	for d := 0; d < dates; d++ {
		for i := 0; i < pipelines; i++ {
			runs = append(runs, run{fmt.Sprintf("p%04d", i), dsOf(d)})
		}
	}
	var out []waitsResult
	published := 0
	var stages []int
	for _, s := range []int{100, 1000, pipelines * dates} {
		if s <= pipelines*dates && (len(stages) == 0 || s > stages[len(stages)-1]) {
			stages = append(stages, s)
		}
	}
	for _, stage := range stages {
		for ; published < stage; published++ {
			r := runs[published]
			if _, err := b.request(ctx, r.pipeline, r.ds); err != nil {
				return nil, err
			}
		}
		// Every run delivered once and parked (nak'd with its delay), none in flight.
		if err := await(5*time.Minute, fmt.Sprintf("%d runs parked", stage), func() (bool, error) {
			pending, ack, _, err := b.consumer(ctx, "sensor")
			return err == nil && pending == 0 && ack == stage, err
		}); err != nil {
			return nil, err
		}
		time.Sleep(poke / 4) // the first pokes' burst is over; measure the steady state
		_, _, d0, err := b.consumer(ctx, "sensor")
		if err != nil {
			return nil, err
		}
		h0, t0 := src.requests(), time.Now()
		var samples []sample
		for time.Since(t0) < poke {
			s, err := p.sample()
			if err != nil {
				return nil, err
			}
			samples = append(samples, s)
			time.Sleep(time.Second)
		}
		_, _, d1, err := b.consumer(ctx, "sensor")
		if err != nil {
			return nil, err
		}
		el := time.Since(t0).Seconds()
		res := waitsResult{waiting: stage, deliveries: float64(d1-d0) / el, pokes: float64(src.requests()-h0) / el}
		rss := make([]int64, len(samples))
		gs := make([]int64, len(samples))
		for i, s := range samples {
			rss[i], gs[i] = s.rssKB, s.goroutines
			res.hwmKB, res.openFDs, res.heapInuse, res.goSys = s.hwmKB, max(res.openFDs, s.openFDs), max(res.heapInuse, s.heapInuse), max(res.goSys, s.goSys)
		}
		slices.Sort(rss)
		slices.Sort(gs)
		res.rssKB, res.rssMaxKB = rss[len(rss)/2], rss[len(rss)-1]
		res.goroutines, res.goroutineMax = gs[len(gs)/2], gs[len(gs)-1]
		log.Printf("waits: %d parked: RSS %d kB (max %d, HWM %d), goroutines %d (max %d), heap in use %.1f MB, Go runtime sys %.1f MB, %.0f deliveries/s, %.0f pokes/s",
			stage, res.rssKB, res.rssMaxKB, res.hwmKB, res.goroutines, res.goroutineMax, float64(res.heapInuse)/(1<<20), float64(res.goSys)/(1<<20), res.deliveries, res.pokes)
		out = append(out, res)
	}
	return out, nil
}
