package healthchecker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/micro"

	"github.com/mrlb/mrlb/shared/bus"
	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/version"
)

// maxCommandConcurrency bounds on-demand requests handled at once, and
// checkAllConcurrency the probes of one "check all".
const (
	maxCommandConcurrency = 16
	checkAllConcurrency   = 64
)

// startCommands registers the micro service with its one endpoint. The
// handler runs each request in its own goroutine because micro delivers a
// subscription's requests one at a time and a check can take the whole
// timeout.
func (s *Service) startCommands() (micro.Service, error) {
	timeout := s.cfg.Timeout.D() + 2*s.cfg.RequestTimeout.D()
	h := bus.Handle(timeout, s.handleCheck)
	sem := make(chan struct{}, maxCommandConcurrency)
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        bus.ServiceHealthChecker,
		Version:     version.Version,
		Description: "active health checks of regions; on-demand checks",
		Metadata:    map[string]string{"member": s.id},
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service: %w", err)
	}
	err = svc.AddEndpoint("check", micro.HandlerFunc(func(r micro.Request) {
		sem <- struct{}{}
		if !s.spawn(func() {
			defer func() { <-sem }()
			h.Handle(r)
		}) {
			<-sem
			_ = r.Error("503", "health checker is shutting down", nil)
		}
	}), micro.WithEndpointSubject(bus.SubjectCmdHealthCheck))
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("add endpoint %s: %w", bus.SubjectCmdHealthCheck, err)
	}
	return svc, nil
}

// handleCheck answers lb.cmd.health.check: a model.CheckResult for one
// region, a model.HealthCheckAllResponse when no region is given.
func (s *Service) handleCheck(ctx context.Context, req model.HealthCheckRequest) (any, error) {
	name := strings.TrimSpace(req.Region)
	if name == "" {
		return s.checkAll(ctx)
	}
	if err := model.ValidateRegionName(name); err != nil {
		return nil, err
	}
	r, ok := s.region(name)
	if !ok {
		return nil, model.NotFound(name)
	}
	res, err := s.checkNow(ctx, r)
	if err != nil && ctx.Err() != nil {
		return nil, model.Unavailable("check of %s did not finish: %v", name, err)
	}
	return res, nil
}

func (s *Service) checkAll(ctx context.Context) (model.HealthCheckAllResponse, error) {
	s.mu.RLock()
	regions := make([]model.Region, 0, len(s.regions))
	for _, r := range s.regions {
		regions = append(regions, r)
	}
	s.mu.RUnlock()
	slices.SortFunc(regions, func(a, b model.Region) int { return strings.Compare(a.Region, b.Region) })

	results := make([]model.CheckResult, len(regions))
	sem := make(chan struct{}, checkAllConcurrency)
	var wg sync.WaitGroup
	for i, r := range regions {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], _ = s.checkNow(ctx, r)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return model.HealthCheckAllResponse{}, model.Unavailable("check of all regions did not finish: %v", ctx.Err())
	}
	return model.HealthCheckAllResponse{Results: results}, nil
}
