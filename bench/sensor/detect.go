package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-etl/sluice/pkg/event"
	"github.com/sluice-etl/sluice/services/sensor"
)

// detectResult holds, per run, the time from the file becoming available to the broker storing
// the run's `available` event.
type detectResult struct {
	poke    time.Duration
	polled  []time.Duration // the source starts answering 200
	pushed  []time.Duration // a signed webhook push is sent
	answers []time.Duration // the webhook's response time
}

// measureDetect parks n runs on n pipelines polling every poke and n runs on n pipelines with a
// webhook (polling only every minute), then makes each file available at a random moment within
// a window: by answering 200 for the first set, by a push for the second.
func measureDetect(ctx context.Context, bin, dir string, n int, poke, window time.Duration) (*detectResult, error) {
	b, err := startBroker(dir + "/nats-detect")
	if err != nil {
		return nil, err
	}
	defer b.close()
	src, err := startSource()
	if err != nil {
		return nil, err
	}
	defer src.srv.Close()
	raw := make([]byte, 32)
	if _, err := crand.Read(raw); err != nil {
		return nil, err
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(raw)
	key, err := sensor.SigningKey(secret)
	if err != nil {
		return nil, err
	}
	var cfg strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&cfg, `  - name: poll%03d
    source:
      url: %s/poll%03d/{ds}.csv
    sensor:
      poke_interval: %s
    lease:
      ttl: %s
  - name: push%03d
    source:
      url: %s/push%03d/{ds}.csv
    sensor:
      poke_interval: 1m
      webhook:
        secret: env:BENCH_HOOK_SECRET
    lease:
      ttl: 3m
`, i, src.url, i, poke, 4*poke, i, src.url, i)
	}
	config, err := writeConfig(dir, "detect.yaml", cfg.String())
	if err != nil {
		return nil, err
	}
	p, err := startSensor(bin, dir, config, b.ns.ClientURL(), "BENCH_HOOK_SECRET="+secret)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	ds := dsOf(0)
	for i := 0; i < n; i++ {
		for _, name := range []string{fmt.Sprintf("poll%03d", i), fmt.Sprintf("push%03d", i)} {
			if _, err := b.request(ctx, name, ds); err != nil {
				return nil, err
			}
		}
	}
	if err := await(2*time.Minute, "every run parked", func() (bool, error) {
		pending, ack, _, err := b.consumer(ctx, "sensor")
		return err == nil && pending == 0 && ack == 2*n, err
	}); err != nil {
		return nil, err
	}
	time.Sleep(poke) // pokes spread over the interval, as in a long-running sensor

	res := &detectResult{poke: poke}
	// Polled: each path starts answering 200 at a random moment of the window.
	became := make([]time.Time, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.Int64N(int64(window))))
			became[i] = src.setReady(fmt.Sprintf("/poll%03d/%s.csv", i, ds))
		}()
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("poll%03d", i)
		var at time.Time
		if err := await(poke+time.Minute, name+" available", func() (bool, error) {
			t, _, err := b.storedAt(ctx, name, event.KindAvailable, ds)
			at = t
			return err == nil, nil
		}); err != nil {
			return nil, err
		}
		res.polled = append(res.polled, at.Sub(became[i]))
	}

	// Pushed: each pipeline's webhook is called at a random moment of the window.
	sent := make([]time.Time, n)
	answers := make([]time.Duration, n)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.Int64N(int64(window))))
			body := []byte(`{"ds":"` + ds + `"}`)
			id := fmt.Sprintf("bench-%03d", i)
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+fmt.Sprintf("/hooks/push%03d", i), bytes.NewReader(body))
			req.Header.Set(sensor.HeaderID, id)
			req.Header.Set(sensor.HeaderTimestamp, ts)
			req.Header.Set(sensor.HeaderSignature, sensor.Sign(key, id, ts, body))
			sent[i] = time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			answers[i] = time.Since(sent[i])
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				errs <- fmt.Errorf("push%03d: webhook answered %s", i, resp.Status)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return nil, err
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("push%03d", i)
		var at time.Time
		if err := await(time.Minute, name+" available", func() (bool, error) {
			t, _, err := b.storedAt(ctx, name, event.KindAvailable, ds)
			at = t
			return err == nil, nil
		}); err != nil {
			return nil, err
		}
		res.pushed = append(res.pushed, at.Sub(sent[i]))
	}
	res.answers = answers
	return res, nil
}
