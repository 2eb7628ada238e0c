//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	dnetwork "github.com/moby/moby/api/types/network"
	docker "github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/mrlb/mrlb/shared/model"
	"github.com/mrlb/mrlb/shared/poll"
)

// The e2e test runs the topology of compose.yaml from the offline images of
// `make images` (mrlb/<name>:latest; MRLB_IMAGE_PREFIX and MRLB_IMAGE_TAG
// change that) with testcontainers-go: a 3-node NATS cluster with JetStream
// and replicas 3, configmgr, two healthcheckers, two failover managers, two
// routers (a third one later), apigw and three demo regions. Ryuk is not
// used (TESTCONTAINERS_RYUK_DISABLED=true): every container and the network
// carry the label mrlb.e2e.run=<run id> and are removed by t.Cleanup, also
// when the test fails; `make e2e-clean` removes what an interrupted run
// (killed by a signal or -timeout) left behind.

const apiKey = "e2e-test-key-0123"

func image(name string) string {
	prefix, tag := os.Getenv("MRLB_IMAGE_PREFIX"), os.Getenv("MRLB_IMAGE_TAG")
	if prefix == "" {
		prefix = "mrlb"
	}
	if tag == "" {
		tag = "latest"
	}
	return prefix + "/" + name + ":" + tag
}

// ctrStack is the running system.
type ctrStack struct {
	t      *testing.T
	run    string
	labels map[string]string
	net    *testcontainers.DockerNetwork

	mu   sync.Mutex
	ctrs map[string]*testcontainers.DockerContainer
}

type ctrSpec struct {
	name    string // container alias on the network (nats-1, router-1, us-east ...)
	image   string
	env     map[string]string
	cmd     []string
	ports   []string // exposed on 127.0.0.1, random host ports
	waitFor wait.Strategy
}

// loopbackPorts binds every exposed port on 127.0.0.1 only.
func loopbackPorts(ports []string) func(*container.HostConfig) {
	return func(hc *container.HostConfig) {
		hc.PortBindings = dnetwork.PortMap{}
		for _, p := range ports {
			hc.PortBindings[dnetwork.MustParsePort(p)] = []dnetwork.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}}
		}
	}
}

// start creates and starts one container; its cleanup (registered before
// any error check) prints its log when the test failed and removes it.
func (s *ctrStack) start(ctx context.Context, sp ctrSpec) (*testcontainers.DockerContainer, error) {
	opts := []testcontainers.ContainerCustomizer{
		testcontainers.WithName("mrlb-e2e-" + s.run + "-" + sp.name),
		testcontainers.WithLabels(s.labels),
		network.WithNetwork([]string{sp.name}, s.net),
		testcontainers.WithEnv(sp.env),
		testcontainers.WithExposedPorts(sp.ports...),
		testcontainers.WithHostConfigModifier(loopbackPorts(sp.ports)),
	}
	if len(sp.cmd) > 0 {
		opts = append(opts, testcontainers.WithCmd(sp.cmd...))
	}
	if sp.waitFor != nil {
		opts = append(opts, testcontainers.WithWaitStrategyAndDeadline(90*time.Second, sp.waitFor))
	}
	c, err := testcontainers.Run(ctx, sp.image, opts...)
	s.t.Cleanup(func() {
		if c == nil {
			return
		}
		if s.t.Failed() {
			s.t.Logf("---- %s (last lines)\n%s", sp.name, tail(logsOf(c), 40))
		}
		if err := c.Terminate(context.Background(), testcontainers.StopTimeout(5*time.Second)); err != nil {
			s.t.Logf("terminate %s: %v", sp.name, err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", sp.name, err)
	}
	s.mu.Lock()
	s.ctrs[sp.name] = c
	s.mu.Unlock()
	return c, nil
}

// startAll starts containers in parallel.
func (s *ctrStack) startAll(ctx context.Context, specs ...ctrSpec) {
	s.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, sp := range specs {
		wg.Go(func() { _, errs[i] = s.start(ctx, sp) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatal(err)
	}
}

func (s *ctrStack) ctr(name string) *testcontainers.DockerContainer {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.ctrs[name]
	if c == nil {
		s.t.Fatalf("no container %s", name)
	}
	return c
}

// url is http://127.0.0.1:<mapped port> of a container port.
func (s *ctrStack) url(ctx context.Context, name, port string) string {
	s.t.Helper()
	p, err := s.ctr(name).MappedPort(ctx, port)
	if err != nil {
		s.t.Fatalf("mapped port %s of %s: %v", port, name, err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", p.Num())
}

// stop stops a container; timeout 0 kills it outright.
func (s *ctrStack) stop(ctx context.Context, name string, timeout time.Duration) {
	s.t.Helper()
	if err := s.ctr(name).Stop(ctx, &timeout); err != nil {
		s.t.Fatalf("stop %s: %v", name, err)
	}
}

// kill sends SIGKILL to a container (a crash, not a shutdown) and waits
// until it is down.
func (s *ctrStack) kill(ctx context.Context, name string) {
	s.t.Helper()
	c := s.ctr(name)
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		s.t.Fatalf("docker client: %v", err)
	}
	defer func() { _ = cli.Close() }()
	if _, err := cli.ContainerKill(ctx, c.GetContainerID(), docker.ContainerKillOptions{Signal: "KILL"}); err != nil {
		s.t.Fatalf("kill %s: %v", name, err)
	}
	poll.Until(s.t, 30*time.Second, "container "+name+" down", func() error {
		st, err := c.State(ctx)
		if err == nil && st.Running {
			err = errors.New("still running")
		}
		return err
	})
}

func logsOf(c *testcontainers.DockerContainer) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := c.Logs(ctx)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = rc.Close() }()
	var buf bytes.Buffer
	_, _ = io.Copy(&buf, rc)
	return buf.String()
}

func serviceEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"NATS_URL":             "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222",
		"NATS_REPLICAS":        "3",
		"NATS_REQUEST_TIMEOUT": "3s",
		"LOG_LEVEL":            "info",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

func ready(port string) wait.Strategy {
	return wait.ForHTTP("/readyz").WithPort(port).WithStartupTimeout(90 * time.Second)
}

func routerSpec(name string) ctrSpec {
	return ctrSpec{
		name:  name,
		image: image("router"),
		env: serviceEnv(map[string]string{
			"ROUTER_ID":                name,
			"ROUTER_STATE_FILE":        "/data/router-state.json",
			"ROUTER_PRESENCE_INTERVAL": "1s",
		}),
		ports:   []string{"8000/tcp", "9094/tcp"},
		waitFor: ready("9094/tcp"),
	}
}

func dockerAvailable(t *testing.T) {
	t.Helper()
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		// Ryuk's image cannot be pulled here; clean-up is done by the test.
		t.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		// Ports are published on 127.0.0.1 only; inside a container
		// testcontainers would otherwise guess the default gateway.
		t.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	}
	for _, name := range []string{"nats-server", "configmgr", "healthchecker", "failover", "router", "apigw", "demoregion"} {
		if out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", image(name)).CombinedOutput(); err != nil {
			if errors.Is(err, exec.ErrNotFound) {
				return // no docker CLI: let testcontainers find the engine
			}
			t.Fatalf("image %s is missing (run make images): %s", image(name), strings.TrimSpace(string(out)))
		}
	}
}

// partialSyncHint explains the known way a fresh router routes wrongly for a
// moment: it applies the initial contents of each watched bucket as soon as
// that bucket is read (router.watchBucket -> table.ReplaceBucket), so it may
// route with lb_regions loaded and lb_failover not yet.
const partialSyncHint = "\n(a fresh router applies each bucket's initial contents on its own, so for a moment it may have " +
	"lb_regions but not yet lb_failover; see services/router/service.go watchBucket / table.ReplaceBucket)"

// TestComposeStack is the end-to-end test of issue 6 (see the file comment).
func TestComposeStack(t *testing.T) {
	dockerAvailable(t)
	began := time.Now()
	step := func(format string, args ...any) {
		t.Logf("[%6.1fs] %s", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	b := make([]byte, 4)
	_, _ = rand.Read(b)
	run := hex.EncodeToString(b)
	s := &ctrStack{t: t, run: run, labels: map[string]string{"mrlb.e2e": "true", "mrlb.e2e.run": run}, ctrs: map[string]*testcontainers.DockerContainer{}}
	nw, err := network.New(ctx, network.WithLabels(s.labels))
	// Registered first, so it runs after every container's clean-up.
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatalf("network: %v", err)
	}
	s.net = nw
	step("run %s, network %s", run, nw.Name)

	// NATS: three nodes, each waits for the others, so start them together
	// and wait for JetStream health afterwards.
	var natsSpecs []ctrSpec
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("nats-%d", i)
		natsSpecs = append(natsSpecs, ctrSpec{
			name: name, image: image("nats-server"),
			env:   map[string]string{"NATS_SERVER_NAME": name},
			cmd:   []string{"-c", "/etc/nats/cluster.conf"},
			ports: []string{"4222/tcp", "8222/tcp"},
		})
	}
	regions := []string{"us-east", "eu-west", "ap-south"}
	var regionSpecs []ctrSpec
	for _, r := range regions {
		regionSpecs = append(regionSpecs, ctrSpec{
			name: r, image: image("demoregion"),
			env:     map[string]string{"DEMO_REGION": r, "DEMO_LATENCY": "2ms"},
			ports:   []string{"9000/tcp"},
			waitFor: wait.ForHTTP("/_demo/state").WithPort("9000/tcp"),
		})
	}
	s.startAll(ctx, append(natsSpecs, regionSpecs...)...)
	natsHealthy := func(name string) {
		t.Helper()
		poll.Until(t, 90*time.Second, name+" JetStream healthy", func() error {
			code, b, err := api(http.MethodGet, s.url(ctx, name, "8222/tcp")+"/healthz", "", nil)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("%d %s", code, b)
			}
			return err
		})
	}
	for _, sp := range natsSpecs {
		natsHealthy(sp.name)
	}
	step("NATS cluster healthy")

	// The test's NATS client, on the mapped client ports of all three nodes.
	var urls []string
	for _, sp := range natsSpecs {
		urls = append(urls, strings.Replace(s.url(ctx, sp.name, "4222/tcp"), "http://", "nats://", 1))
	}
	_, js, ev := observer(t, strings.Join(urls, ","), nats.IgnoreDiscoveredServers())

	var seed []string
	for _, r := range regions {
		seed = append(seed, r+":http://"+r+":9000")
	}
	specs := []ctrSpec{{
		name: "configmgr", image: image("configmgr"),
		env:   serviceEnv(map[string]string{"REGIONAL_ENDPOINTS": strings.Join(seed, ","), "REGION_ALLOW_PLAINTEXT": "true"}),
		ports: []string{"9091/tcp"}, waitFor: ready("9091/tcp"),
	}, {
		name: "apigw", image: image("apigw"),
		env:   serviceEnv(map[string]string{"API_ADDR": ":8080", "API_KEYS": apiKey}),
		ports: []string{"8080/tcp", "9095/tcp"}, waitFor: ready("9095/tcp"),
	}}
	for i := 1; i <= 2; i++ {
		specs = append(specs, ctrSpec{
			name: fmt.Sprintf("healthchecker-%d", i), image: image("healthchecker"),
			env: serviceEnv(map[string]string{
				"HEALTHCHECKER_ID":      fmt.Sprintf("healthchecker-%d", i),
				"HEALTH_CHECK_INTERVAL": "1s",
				"HEALTH_CHECK_TIMEOUT":  "500ms",
			}),
			ports: []string{"9092/tcp"}, waitFor: ready("9092/tcp"),
		}, ctrSpec{
			name: fmt.Sprintf("failover-%d", i), image: image("failover"),
			env: serviceEnv(map[string]string{
				"FAILOVER_ID":        fmt.Sprintf("failover-%d", i),
				"FAILBACK_DELAY":     "3s",
				"FAILOVER_LEASE_TTL": "3s",
			}),
			ports: []string{"9093/tcp"}, waitFor: ready("9093/tcp"),
		}, routerSpec(fmt.Sprintf("router-%d", i)))
	}
	s.startAll(ctx, specs...)
	step("services started")

	routers := map[string]string{}
	for _, r := range []string{"router-1", "router-2"} {
		routers[r] = s.url(ctx, r, "8000/tcp")
	}
	apiBase := s.url(ctx, "apigw", "8080/tcp")
	burstAll := func(n int, want ...string) error {
		for _, name := range sortedKeys(routers) {
			seen, err := burst(routers[name], n)
			if err == nil {
				err = exactly(seen, want...)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	}
	demo := func(region, query string) {
		t.Helper()
		code, b, err := api(http.MethodPost, s.url(ctx, region, "9000/tcp")+query, "", nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("demo control %s%s: %d %s %v", region, query, code, b, err)
		}
	}

	// 1. Traffic flows through each router replica to every region.
	poll.Until(t, 60*time.Second, "each router serves every region", func() error { return burstAll(30, regions...) })
	for _, bucket := range []string{"KV_lb_regions", "KV_lb_health", "KV_lb_failover", "LB_EVENTS"} {
		st, err := js.Stream(ctx, bucket)
		if err != nil {
			t.Fatalf("stream %s: %v", bucket, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", bucket, err)
		}
		if info.Config.Replicas != 3 {
			t.Fatalf("stream %s has %d replicas, want 3", bucket, info.Config.Replicas)
		}
	}
	step("both routers serve %v; buckets and streams have 3 replicas", regions)

	// 2. A region container stopped outright (SIGKILL) is failed over; after the
	// detection bound clients see no errors for GETs.
	mark := ev.mark()
	var loadErrs, loadOK int
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() { // client traffic during detection, for the log
		defer close(loadDone)
		for {
			select {
			case <-stopLoad:
				return
			default:
			}
			for _, u := range routers {
				if code, _, err := hit(u + "/during-detection"); err != nil || code != http.StatusOK {
					loadErrs++
				} else {
					loadOK++
				}
			}
		}
	}()
	stoppedAt := time.Now()
	s.kill(ctx, "ap-south")
	fo := ev.wait(t, 30*time.Second, mark, "failover.started ap-south", isFailover(model.EventFailoverStarted, "ap-south"))
	detected := time.Since(stoppedAt)
	close(stopLoad)
	<-loadDone
	if err := burstAll(50, "us-east", "eu-west"); err != nil {
		t.Fatalf("GETs after the failover of ap-south: %v", err)
	}
	step("ap-south stopped: failover.started to %s (%s) after %s; GETs during detection: %d ok, %d errors; after: no errors",
		fo.ToRegion, fo.Reason, detected.Round(time.Millisecond), loadOK, loadErrs)
	live := []string{"us-east", "eu-west"}

	// 3. One NATS node stopped: the leader of the region registry's stream.
	st, err := js.Stream(ctx, "KV_lb_regions")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("KV_lb_regions leader: %+v %v", info, err)
	}
	downNode := info.Cluster.Leader
	s.stop(ctx, downNode, 10*time.Second)
	step("stopped NATS node %s (leader of KV_lb_regions)", downNode)
	if err := burstAll(50, live...); err != nil {
		t.Fatalf("routing with %s down: %v", downNode, err)
	}
	// Config changes: each retried until acknowledged (a stream leader
	// election may answer 503 for a moment); every acknowledged one must stay.
	acked := map[string]string{}
	change := func(what, method, path string, body any, want int) {
		t.Helper()
		attempts, t0 := 0, time.Now()
		poll.Until(t, 30*time.Second, what, func() error {
			attempts++
			code, b, err := api(method, apiBase+path, apiKey, body)
			if err == nil && code != want {
				err = fmt.Errorf("%d %s", code, b)
			}
			return err
		})
		acked[what] = method + " " + path
		step("acknowledged %q after %d attempt(s) in %s", what, attempts, time.Since(t0).Round(time.Millisecond))
	}
	change("add sa-east", http.MethodPost, "/api/v1/lb/regions", map[string]any{"region": "sa-east", "endpoint": "http://eu-west:9000"}, http.StatusCreated)
	change("us-east weight 2", http.MethodPut, "/api/v1/lb/regions/us-east", map[string]any{"weight": 2}, http.StatusOK)
	change("eu-west weight 3", http.MethodPut, "/api/v1/lb/regions/eu-west", map[string]any{"weight": 3}, http.StatusOK)
	change("strategy weighted", http.MethodPut, "/api/v1/lb/strategy", map[string]any{"strategy": "weighted"}, http.StatusOK)
	live = append(live, "sa-east")
	// Watches notice a lost consumer within about 4 s (1 s heartbeats), or at
	// once from the leader advisory; 15 s leaves room for a busy machine.
	followStart := time.Now()
	poll.Until(t, 15*time.Second, "routers follow the config changes", func() error { return burstAll(60, live...) })
	step("routers follow the config changes after %s", time.Since(followStart).Round(time.Millisecond))
	// Failover keeps working: a sick region fails over and back.
	mark = ev.mark()
	demo("us-east", "/_demo/health?healthy=false")
	fo = ev.wait(t, 30*time.Second, mark, "failover.started us-east", isFailover(model.EventFailoverStarted, "us-east"))
	poll.Until(t, 20*time.Second, "routers leave us-east", func() error { return burstAll(40, "eu-west", "sa-east") })
	step("us-east sick: failed over to %s, routers left it", fo.ToRegion)
	mark = ev.mark()
	demo("us-east", "/_demo/health?healthy=true")
	ev.wait(t, 30*time.Second, mark, "failover.ended us-east", isFailover(model.EventFailoverEnded, "us-east"))
	poll.Until(t, 20*time.Second, "routers take us-east back", func() error { return burstAll(60, live...) })
	step("with %s down: routing, %d config changes and a failover (to %s) and failback worked", downNode, len(acked), fo.ToRegion)

	// The node comes back; then another one goes away, so the node that was
	// down is needed for a quorum: every acknowledged change is still there.
	if err := s.ctr(downNode).Start(ctx); err != nil {
		t.Fatalf("start %s: %v", downNode, err)
	}
	natsHealthy(downNode)
	other := "nats-1"
	if downNode == other {
		other = "nats-2"
	}
	s.stop(ctx, other, 10*time.Second)
	step("%s back and healthy; stopped %s", downNode, other)
	checkState := func() error {
		reg, err := registry(apiBase, apiKey)
		if err != nil {
			return err
		}
		want := map[string]string{
			"us-east":  "http://us-east:9000|2|/health",
			"eu-west":  "http://eu-west:9000|3|/health",
			"ap-south": "http://ap-south:9000|1|/health",
			"sa-east":  "http://eu-west:9000|1|/health",
		}
		if fmt.Sprint(reg) != fmt.Sprint(want) {
			return fmt.Errorf("registry %v, want %v", reg, want)
		}
		code, b, err := api(http.MethodGet, apiBase+"/api/v1/lb/status", apiKey, nil)
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("status: %d %s %v", code, b, err)
		}
		if !bytes.Contains(b, []byte(`"strategy":"weighted"`)) {
			return fmt.Errorf("strategy lost: %s", b)
		}
		return nil
	}
	poll.Until(t, 30*time.Second, "every acknowledged config change is kept", checkState)
	if err := burstAll(60, live...); err != nil {
		t.Fatalf("routing with %s down: %v", other, err)
	}
	if err := s.ctr(other).Start(ctx); err != nil {
		t.Fatalf("start %s: %v", other, err)
	}
	natsHealthy(other)
	poll.Until(t, 30*time.Second, "state after every node is back", checkState)
	step("%d acknowledged changes intact with %s down and after; cluster whole again", len(acked), other)

	// 4. A failover-manager replica stopped (SIGKILL, so it cannot hand its
	// lease over): the other takes over once the lease expires.
	var leader string
	poll.Until(t, 20*time.Second, "a failover leader", func() error {
		h, err := leaseHolder(ctx, js)
		leader = h
		return err
	})
	standby := map[string]string{"failover-1": "failover-2", "failover-2": "failover-1"}[leader]
	if standby == "" {
		t.Fatalf("unexpected lease holder %q", leader)
	}
	s.kill(ctx, leader)
	killedAt := time.Now()
	poll.Until(t, 30*time.Second, "the standby takes the lease", func() error {
		h, err := leaseHolder(ctx, js)
		if err == nil && h != standby {
			err = fmt.Errorf("holder %q", h)
		}
		return err
	})
	takeover := time.Since(killedAt)
	mark = ev.mark()
	demo("eu-west", "/_demo/health?healthy=false")
	ev.wait(t, 30*time.Second, mark, "failover.started eu-west", isFailover(model.EventFailoverStarted, "eu-west"))
	poll.Until(t, 20*time.Second, "routers leave eu-west", func() error { return burstAll(40, "us-east") })
	mark = ev.mark()
	demo("eu-west", "/_demo/health?healthy=true")
	ev.wait(t, 30*time.Second, mark, "failover.ended eu-west", isFailover(model.EventFailoverEnded, "eu-west"))
	poll.Until(t, 20*time.Second, "routers take eu-west back", func() error { return burstAll(60, live...) })
	step("%s killed: %s took the lease after %s, failed eu-west over and back", leader, standby, takeover.Round(time.Millisecond))

	// 5. A router started later routes correctly at once: a manual failover
	// of the (alive) us-east is in force and sa-east exists.
	code, body, err := api(http.MethodPost, apiBase+"/api/v1/lb/failover/trigger", apiKey, map[string]any{"from_region": "us-east", "to_region": "eu-west"})
	if err != nil || code != http.StatusOK {
		t.Fatalf("manual failover: %d %s %v", code, body, err)
	}
	poll.Until(t, 20*time.Second, "routers follow the manual failover", func() error { return burstAll(40, "eu-west", "sa-east") })
	if _, err := s.start(ctx, routerSpec("router-3")); err != nil {
		t.Fatal(err)
	}
	// Its /readyz (NATS connected) passes before its routing table is read
	// from the buckets; until then it answers 503 no_region_available. From
	// its first routed answer on, every request must go where the current
	// state says: never to the failed-over us-east, and to sa-east too.
	r3 := s.url(ctx, "router-3", "8000/tcp")
	readyAt, early := time.Now(), 0
	poll.Until(t, 20*time.Second, "router-3 routes", func() error {
		code, region, err := hit(r3 + "/first")
		switch {
		case err != nil:
			return err
		case code == http.StatusServiceUnavailable:
			early++
			return errors.New("503 before its routing table is synced")
		case code != http.StatusOK || (region != "eu-west" && region != "sa-east"):
			t.Fatalf("router-3's first routed request: status %d, region %q (want eu-west or sa-east)%s", code, region, partialSyncHint)
		}
		return nil
	})
	firstAt := time.Since(readyAt)
	seen, err := burst(r3, 60)
	if err == nil {
		err = exactly(seen, "eu-west", "sa-east")
	}
	if err != nil {
		t.Fatalf("router-3's first requests: %v%s", err, partialSyncHint)
	}
	step("router-3 started later: routed correctly from its first answer, %s after /readyz (%d early 503s before its table synced); next 60 GETs: %v",
		firstAt.Round(time.Millisecond), early, seen)

	code, body, err = api(http.MethodDelete, apiBase+"/api/v1/lb/failover/us-east", apiKey, nil)
	if err != nil || code != http.StatusNoContent {
		t.Fatalf("clear manual failover: %d %s %v", code, body, err)
	}
	routers["router-3"] = s.url(ctx, "router-3", "8000/tcp")
	poll.Until(t, 20*time.Second, "all three routers take us-east back", func() error { return burstAll(60, live...) })
	step("done")
}
