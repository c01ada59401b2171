package flow

import (
	"context"

	"github.com/sluice-etl/sluice/pkg/config"
	"github.com/sluice-etl/sluice/pkg/event"
)

// On is the route of step for the events of In's kind: handle gets the event as its own type
// and returns its own (nil Out ends the flow, as the alerter's steps do), so no step asserts a
// type. claims, if given, checks the event against the pipeline's config (Route.Claims).
//
//	flow.On(event.StepFetcher, f.Handle, fetcher.Claims) // f.Handle(ctx, p, *event.Available) (*event.Landed, error)
func On[In event.Event, Out interface {
	comparable
	event.Event
}](step event.Step, handle func(ctx context.Context, p *config.Pipeline, in In) (Out, error), claims ...func(p *config.Pipeline, in In) error) Route {
	var none In
	rt := Route{Step: step, Consumes: none.Kind(), Handle: func(ctx context.Context, p *config.Pipeline, e event.Event) (event.Event, error) {
		in, ok := e.(In)
		if !ok {
			return nil, Permanentf("step %s consumes %s events, not %s", step, none.Kind(), e.Kind())
		}
		out, err := handle(ctx, p, in)
		var end Out
		if err != nil || out == end {
			return nil, err // never a typed nil, which the router would publish
		}
		return out, nil
	}}
	if len(claims) > 0 {
		check := claims[0]
		rt.Claims = func(p *config.Pipeline, e event.Event) error {
			in, ok := e.(In)
			if !ok {
				return Permanentf("step %s consumes %s events, not %s", step, none.Kind(), e.Kind())
			}
			return check(p, in)
		}
	}
	return rt
}
