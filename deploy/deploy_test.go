package deploy_test

// These tests validate the production manifests (compose.yaml, k8s/*.yaml) and the Dockerfile
// without running them — there is no container engine or cluster here. They check what breaks
// a deployment silently: a misspelt TOLLGATE_ variable (the binaries would ignore it and run on
// a default), a port that is not the one DESIGN §7 fixes, a probe aimed at a port the pod does
// not open, a secret written inline, a grace period shorter than the edge's own shutdown, an
// edge without its own volume for its write-ahead log.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

// binaries are the programs deploy/Dockerfile builds, by the package that holds each main.
var binaries = map[string]string{
	"edge":      "./edge/cmd/edge",
	"ledgerd":   "./ledgerd/cmd/ledgerd",
	"analytics": "./analytics/cmd/analytics",
	"bench":     "./bench/cmd/bench",
	"devstack":  "./bench/cmd/devstack",
}

// binDir is where the image puts them; manifests name binaries by this path.
const binDir = "/usr/local/bin/"

// envByBinary lists, per binary, the TOLLGATE_ variables the deploy files may set for it.
// Each one must be accepted by that binary (TestEnvListAcceptedByBinaries); each one a
// manifest sets must be on its binary's list (TestManifestEnvNames).
var envByBinary = map[string][]string{
	"edge": {
		"TOLLGATE_EDGE_ID", "TOLLGATE_EDGE_ADDR", "TOLLGATE_EDGE_OPS_ADDR", "TOLLGATE_DATA_DIR",
		"TOLLGATE_UPSTREAM_URL", "TOLLGATE_UPSTREAM_KEYS", "TOLLGATE_LEDGER_URL",
		"TOLLGATE_INTERNAL_SECRET", "TOLLGATE_KAFKA_BROKERS", "TOLLGATE_KAFKA_PARTITIONS",
		"TOLLGATE_SHUTDOWN_TIMEOUT", "TOLLGATE_RECORDS_FLUSH_TIMEOUT", "TOLLGATE_WAL_BYTES_MAX",
		"TOLLGATE_LOG_LEVEL", "TOLLGATE_PRICES_FILE",
	},
	"ledgerd": {
		"TOLLGATE_LEDGER_DB", "TOLLGATE_ADMIN_TOKEN", "TOLLGATE_INTERNAL_SECRET",
		"TOLLGATE_WEBHOOK_SECRET", "TOLLGATE_KAFKA_BROKERS", "TOLLGATE_KAFKA_PARTITIONS",
		"TOLLGATE_LEDGER_INTERNAL_ADDR", "TOLLGATE_LEDGER_ADMIN_ADDR", "TOLLGATE_SHUTDOWN_TIMEOUT",
		"TOLLGATE_PLANS_FILE", "TOLLGATE_DATA_DIR",
	},
	"analytics": {
		"TOLLGATE_CLICKHOUSE_DSN", "TOLLGATE_ADMIN_TOKEN", "TOLLGATE_KAFKA_BROKERS",
		"TOLLGATE_KAFKA_PARTITIONS", "TOLLGATE_ANALYTICS_ADDR", "TOLLGATE_LOG_LEVEL",
	},
	// The mock upstream is configured by flags in compose.yaml.
	"bench": {},
}

// secretEnv are the variables that hold secrets: in Kubernetes they must come from a Secret,
// in compose from the env file (interpolation), never written into a manifest.
var secretEnv = []string{
	"TOLLGATE_ADMIN_TOKEN", "TOLLGATE_INTERNAL_SECRET", "TOLLGATE_UPSTREAM_KEYS",
	"TOLLGATE_LEDGER_DB", "TOLLGATE_CLICKHOUSE_DSN", "TOLLGATE_WEBHOOK_SECRET",
}

// Default ports, DESIGN §7.
const (
	portEdge             = 8080
	portEdgeOps          = 9101
	portLedgerdInternal  = 8090
	portLedgerdAdmin     = 8091
	portAnalytics        = 8095
	portMockUpstream     = 8070
	portKafka            = 9092
	probeReady           = "/readyz"
	probeLive            = "/healthz"
	tollgateImageK8s     = "tollgate"
	tollgateImageCompose = "tollgate:local"
)

// listenPorts gives, per binary, each listen-address variable and the port it must carry. They
// must be set explicitly: the ops, admin and analytics defaults bind 127.0.0.1, which a
// container's probes and published ports cannot reach.
var listenPorts = map[string]map[string]int{
	"edge":      {"TOLLGATE_EDGE_ADDR": portEdge, "TOLLGATE_EDGE_OPS_ADDR": portEdgeOps},
	"ledgerd":   {"TOLLGATE_LEDGER_INTERNAL_ADDR": portLedgerdInternal, "TOLLGATE_LEDGER_ADMIN_ADDR": portLedgerdAdmin},
	"analytics": {"TOLLGATE_ANALYTICS_ADDR": portAnalytics},
}

// probePort is the listener each service's probes use: the edge's operator listener,
// ledgerd's admin listener, analytics' only listener.
var probePort = map[string]int{"edge": portEdgeOps, "ledgerd": portLedgerdAdmin, "analytics": portAnalytics}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repository root should be deploy/..")
	return root
}

// decodeAll decodes every document of a YAML stream into nodes, skipping empty ones.
func decodeAll(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		require.NoError(t, err, "parse %s (document %d)", path, len(docs)+1)
		if len(n.Content) > 0 && n.Content[0].Kind != yaml.ScalarNode {
			docs = append(docs, &n)
		}
	}
}

// ---- Kubernetes ----

// intOrString is a port given by number or by name.
type intOrString string

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a port number or name", n.Line)
	}
	*v = intOrString(n.Value)
	return nil
}

type keyRef struct {
	Name     string `yaml:"name"`
	Key      string `yaml:"key"`
	Optional bool   `yaml:"optional"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
		ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
		FieldRef        *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string      `yaml:"path"`
		Port intOrString `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env            []envVar `yaml:"env"`
	EnvFrom        []any    `yaml:"envFrom"`
	ReadinessProbe *probe   `yaml:"readinessProbe"`
	LivenessProbe  *probe   `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop *struct {
			Sleep *struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type workloadSpec struct {
	Replicas    *int          `yaml:"replicas"`
	ServiceName string        `yaml:"serviceName"`
	Selector    labelSelector `yaml:"selector"`
	Template    struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds *int        `yaml:"terminationGracePeriodSeconds"`
			Containers                    []container `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
	VolumeClaimTemplates []struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			Resources struct {
				Requests map[string]string `yaml:"requests"`
			} `yaml:"resources"`
		} `yaml:"spec"`
	} `yaml:"volumeClaimTemplates"`
}

type serviceSpec struct {
	Type      string            `yaml:"type"`
	ClusterIP string            `yaml:"clusterIP"`
	Selector  map[string]string `yaml:"selector"`
	Ports     []struct {
		Name       string      `yaml:"name"`
		Port       int         `yaml:"port"`
		TargetPort intOrString `yaml:"targetPort"`
	} `yaml:"ports"`
}

type pdbSpec struct {
	MinAvailable   *intOrString  `yaml:"minAvailable"`
	MaxUnavailable *intOrString  `yaml:"maxUnavailable"`
	Selector       labelSelector `yaml:"selector"`
}

type k8sObject struct {
	File       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec yaml.Node         `yaml:"spec"`
}

type k8sManifests struct {
	objects    []k8sObject
	workloads  map[string]workloadSpec // by kind/name
	services   map[string]serviceSpec
	pdbs       map[string]pdbSpec
	configMaps map[string]map[string]string
	kustomize  struct {
		Resources []string `yaml:"resources"`
		Images    []struct {
			Name string `yaml:"name"`
		} `yaml:"images"`
	}
}

func loadK8s(t *testing.T) *k8sManifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "deploy/k8s holds the Kubernetes manifests")
	m := &k8sManifests{workloads: map[string]workloadSpec{}, services: map[string]serviceSpec{},
		pdbs: map[string]pdbSpec{}, configMaps: map[string]map[string]string{}}
	for _, f := range files {
		for i, doc := range decodeAll(t, f) {
			var o k8sObject
			require.NoError(t, doc.Decode(&o), "%s document %d", f, i+1)
			o.File = filepath.Base(f)
			require.NotEmpty(t, o.APIVersion, "%s document %d: apiVersion", f, i+1)
			require.NotEmpty(t, o.Kind, "%s document %d: kind", f, i+1)
			if o.Kind == "Kustomization" {
				require.NoError(t, doc.Decode(&m.kustomize), f)
				continue
			}
			require.NotEmpty(t, o.Metadata.Name, "%s document %d: metadata.name", f, i+1)
			id := o.Kind + "/" + o.Metadata.Name
			switch o.Kind {
			case "Deployment", "StatefulSet":
				var s workloadSpec
				require.NoError(t, o.Spec.Decode(&s), "%s %s", f, id)
				m.workloads[id] = s
			case "Service":
				var s serviceSpec
				require.NoError(t, o.Spec.Decode(&s), "%s %s", f, id)
				m.services[o.Metadata.Name] = s
			case "PodDisruptionBudget":
				var s pdbSpec
				require.NoError(t, o.Spec.Decode(&s), "%s %s", f, id)
				m.pdbs[o.Metadata.Name] = s
			case "ConfigMap":
				m.configMaps[o.Metadata.Name] = o.Data
			case "Secret":
				t.Errorf("%s: %s: secrets are created outside the repository (deploy/README.md), never committed", f, id)
			}
			m.objects = append(m.objects, o)
		}
	}
	return m
}

// binaryOf names the Tollgate binary a container runs, from its command.
func binaryOf(command []string) string {
	if len(command) == 0 || !strings.HasPrefix(command[0], binDir) {
		return ""
	}
	return strings.TrimPrefix(command[0], binDir)
}

// tollgateContainers yields the containers of the workloads that run the Tollgate image, with
// the binary each runs.
func (m *k8sManifests) tollgateContainers(t *testing.T) map[string][]container {
	t.Helper()
	out := map[string][]container{}
	for id, w := range m.workloads {
		for _, c := range w.Template.Spec.Containers {
			if c.Image != tollgateImageK8s {
				continue
			}
			bin := binaryOf(c.Command)
			require.Contains(t, binaries, bin, "%s container %s: command %v must start with %s<binary>", id, c.Name, c.Command, binDir)
			out[bin] = append(out[bin], c)
		}
	}
	return out
}

// envValue resolves a literal or ConfigMap value; ok is false for Secret and field references.
func (m *k8sManifests) envValue(t *testing.T, c container, name string) (string, bool) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name != name {
			continue
		}
		if e.ValueFrom == nil {
			return e.Value, true
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			cm, ok := m.configMaps[r.Name]
			require.True(t, ok, "container %s: %s refers to ConfigMap %q, which is not in deploy/k8s", c.Name, name, r.Name)
			v, ok := cm[r.Key]
			require.True(t, ok, "container %s: %s refers to key %q missing from ConfigMap %q", c.Name, name, r.Key, r.Name)
			return v, true
		}
		return "", false
	}
	return "", false
}

func (c container) portNamed(name intOrString) (int, bool) {
	if n, err := strconv.Atoi(string(name)); err == nil {
		return n, true
	}
	for _, p := range c.Ports {
		if p.Name == string(name) {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func TestK8sManifestsParse(t *testing.T) {
	m := loadK8s(t)
	kinds := map[string]int{}
	for _, o := range m.objects {
		kinds[o.Kind]++
	}
	for _, kind := range []string{"Namespace", "ConfigMap", "StatefulSet", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} {
		require.NotZero(t, kinds[kind], "deploy/k8s should hold a %s", kind)
	}
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	m := loadK8s(t)
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	require.NoError(t, err)
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Clone(m.kustomize.Resources)
	slices.Sort(got)
	require.Equal(t, want, got, "kustomization.yaml resources should be exactly the manifests in deploy/k8s")
	require.Len(t, m.kustomize.Images, 1)
	require.Equal(t, tollgateImageK8s, m.kustomize.Images[0].Name, "kustomization.yaml sets the registry and tag of the image the manifests call %q", tollgateImageK8s)
}

func TestK8sWorkloads(t *testing.T) {
	m := loadK8s(t)
	byBin := m.tollgateContainers(t)
	for _, bin := range []string{"edge", "ledgerd", "analytics"} {
		require.Len(t, byBin[bin], 1, "one workload runs %s", bin)
	}
	for id, w := range m.workloads {
		t.Run(id, func(t *testing.T) {
			require.NotNil(t, w.Replicas, "replicas")
			require.NotEmpty(t, w.Selector.MatchLabels)
			for k, v := range w.Selector.MatchLabels {
				require.Equal(t, v, w.Template.Metadata.Labels[k], "the selector must match the pod labels")
			}
			require.NotNil(t, w.Template.Spec.TerminationGracePeriodSeconds, "terminationGracePeriodSeconds")
			for _, c := range w.Template.Spec.Containers {
				require.NotEmpty(t, c.Resources.Requests["cpu"], "container %s: cpu request", c.Name)
				require.NotEmpty(t, c.Resources.Requests["memory"], "container %s: memory request", c.Name)
				require.NotEmpty(t, c.Resources.Limits["memory"], "container %s: memory limit", c.Name)
				require.Empty(t, c.EnvFrom, "container %s: list each variable under env, so its name can be checked", c.Name)
				bin := binaryOf(c.Command)
				port, ok := probePort[bin]
				if !ok {
					continue
				}
				for kind, p := range map[string]struct {
					probe *probe
					path  string
				}{"readiness": {c.ReadinessProbe, probeReady}, "liveness": {c.LivenessProbe, probeLive}} {
					require.NotNil(t, p.probe, "container %s: %s probe", c.Name, kind)
					require.NotNil(t, p.probe.HTTPGet, "container %s: %s probe over HTTP", c.Name, kind)
					require.Equal(t, p.path, p.probe.HTTPGet.Path, "container %s: %s probe path", c.Name, kind)
					got, ok := c.portNamed(p.probe.HTTPGet.Port)
					require.True(t, ok, "container %s: %s probe port %q is not a port of the container", c.Name, kind, p.probe.HTTPGet.Port)
					require.Equal(t, port, got, "container %s: %s probe port", c.Name, kind)
				}
				require.NotNil(t, c.Lifecycle.PreStop, "container %s: preStop, so the balancer drops the pod before it stops accepting", c.Name)
				require.NotNil(t, c.Lifecycle.PreStop.Sleep, "container %s: preStop sleep", c.Name)
			}
		})
	}
}

func TestK8sEveryWorkloadHasADisruptionBudget(t *testing.T) {
	m := loadK8s(t)
	for id, w := range m.workloads {
		found := false
		for _, p := range m.pdbs {
			require.True(t, (p.MinAvailable == nil) != (p.MaxUnavailable == nil), "a PodDisruptionBudget sets one of minAvailable and maxUnavailable")
			if matches(p.Selector.MatchLabels, w.Template.Metadata.Labels) {
				found = true
			}
		}
		require.True(t, found, "%s: no PodDisruptionBudget selects its pods", id)
	}
}

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestK8sPorts(t *testing.T) {
	m := loadK8s(t)
	for bin, cs := range m.tollgateContainers(t) {
		for _, c := range cs {
			for name, port := range listenPorts[bin] {
				v, ok := m.envValue(t, c, name)
				require.True(t, ok, "%s: %s must be set (the default may bind 127.0.0.1)", bin, name)
				host, p := splitHostPort(t, v)
				require.Empty(t, host, "%s: %s=%q: listen on every interface of the pod", bin, name, v)
				require.Equal(t, port, p, "%s: %s (DESIGN §7)", bin, name)
				declared := false
				for _, cp := range c.Ports {
					declared = declared || cp.ContainerPort == port
				}
				require.True(t, declared, "%s: containerPort %d (%s) not declared", bin, port, name)
			}
			v, ok := m.envValue(t, c, "TOLLGATE_KAFKA_BROKERS")
			require.True(t, ok, "%s: TOLLGATE_KAFKA_BROKERS", bin)
			requireBrokers(t, v)
			if bin == "edge" {
				v, ok := m.envValue(t, c, "TOLLGATE_LEDGER_URL")
				require.True(t, ok, "edge: TOLLGATE_LEDGER_URL")
				require.Equal(t, "http://ledgerd-internal:"+strconv.Itoa(portLedgerdInternal), v, "edges talk to ledgerd's internal listener, never the admin one")
				require.Contains(t, m.services, "ledgerd-internal")
			}
		}
	}
	// Every Service reaches a port some selected container declares, and the Tollgate ones
	// reach the DESIGN ports.
	want := map[string]int{"edge": portEdge, "edge-headless": portEdgeOps, "ledgerd-internal": portLedgerdInternal,
		"ledgerd-admin": portLedgerdAdmin, "analytics": portAnalytics}
	for name, s := range m.services {
		require.NotEmpty(t, s.Ports, "Service %s", name)
		var pods []container
		for _, w := range m.workloads {
			if matches(s.Selector, w.Template.Metadata.Labels) {
				pods = append(pods, w.Template.Spec.Containers...)
			}
		}
		require.NotEmpty(t, pods, "Service %s selects no pods", name)
		for _, sp := range s.Ports {
			found := 0
			for _, c := range pods {
				if p, ok := c.portNamed(sp.TargetPort); ok {
					found = p
				}
			}
			require.NotZero(t, found, "Service %s: targetPort %q is no container port", name, sp.TargetPort)
			if w, ok := want[name]; ok {
				require.Equal(t, w, found, "Service %s targetPort", name)
			}
		}
	}
	require.Equal(t, "LoadBalancer", m.services["edge"].Type, "edges sit behind an L4 balancer")
	for _, private := range []string{"ledgerd-internal", "ledgerd-admin", "analytics"} {
		require.Equal(t, "ClusterIP", m.services[private].Type, "Service %s stays inside the cluster", private)
	}
}

func TestK8sEnvAndSecrets(t *testing.T) {
	m := loadK8s(t)
	for bin, cs := range m.tollgateContainers(t) {
		for _, c := range cs {
			seen := map[string]bool{}
			for _, e := range c.Env {
				require.False(t, seen[e.Name], "%s: %s set twice", bin, e.Name)
				seen[e.Name] = true
				if !strings.HasPrefix(e.Name, "TOLLGATE_") {
					continue
				}
				require.Contains(t, envByBinary[bin], e.Name, "%s does not take %s (deploy_test.go envByBinary)", bin, e.Name)
				if slices.Contains(secretEnv, e.Name) {
					require.True(t, e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil, "%s: %s is a secret: take it from a Secret", bin, e.Name)
					if e.Name != "TOLLGATE_WEBHOOK_SECRET" {
						require.False(t, e.ValueFrom.SecretKeyRef.Optional, "%s: %s is required", bin, e.Name)
					}
				}
			}
			if bin == "edge" {
				require.False(t, seen["TOLLGATE_ADMIN_TOKEN"], "edges must not hold admin rights")
			}
		}
	}
}

func TestK8sEdgeKeepsItsLog(t *testing.T) {
	m := loadK8s(t)
	var edge *workloadSpec
	for id, w := range m.workloads {
		if strings.HasSuffix(id, "/edge") {
			require.True(t, strings.HasPrefix(id, "StatefulSet/"), "the edge is a StatefulSet: each pod keeps its write-ahead log")
			edge = &w
		}
	}
	require.NotNil(t, edge, "StatefulSet/edge")
	require.Contains(t, m.services, edge.ServiceName, "the StatefulSet's governing Service")
	c := m.tollgateContainers(t)["edge"][0]

	dataDir, ok := m.envValue(t, c, "TOLLGATE_DATA_DIR")
	require.True(t, ok, "edge: TOLLGATE_DATA_DIR")
	require.Len(t, edge.VolumeClaimTemplates, 1)
	claim := edge.VolumeClaimTemplates[0]
	mounted := false
	for _, vm := range c.VolumeMounts {
		mounted = mounted || (vm.Name == claim.Metadata.Name && vm.MountPath == dataDir)
	}
	require.True(t, mounted, "the claim %q is mounted at TOLLGATE_DATA_DIR %q", claim.Metadata.Name, dataDir)

	walMax, ok := m.envValue(t, c, "TOLLGATE_WAL_BYTES_MAX")
	require.True(t, ok, "edge: TOLLGATE_WAL_BYTES_MAX, sized to the claim")
	wal := parseBytes(t, walMax)
	disk := parseBytes(t, claim.Spec.Resources.Requests["storage"])
	const headroom = 1 << 30 // a segment, the in-flight excess and the file system's own
	require.GreaterOrEqual(t, disk, wal+headroom, "the claim (%d bytes) must hold the WAL bound (%d bytes) with room to spare", disk, wal)

	// The edge stops in order: preStop sleep, then in-flight requests and streams within
	// TOLLGATE_SHUTDOWN_TIMEOUT, then the WAL flush within TOLLGATE_RECORDS_FLUSH_TIMEOUT.
	shutdown := envDuration(t, m, c, "TOLLGATE_SHUTDOWN_TIMEOUT")
	flush := envDuration(t, m, c, "TOLLGATE_RECORDS_FLUSH_TIMEOUT")
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*edge.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, grace, preStop+shutdown+flush, "edge terminationGracePeriodSeconds")
	require.GreaterOrEqual(t, shutdown, 2*time.Minute, "streams of long generations need minutes to finish")
}

func TestK8sLedgerdGracePeriod(t *testing.T) {
	m := loadK8s(t)
	w, ok := m.workloads["Deployment/ledgerd"]
	require.True(t, ok, "Deployment/ledgerd")
	c := m.tollgateContainers(t)["ledgerd"][0]
	shutdown := envDuration(t, m, c, "TOLLGATE_SHUTDOWN_TIMEOUT")
	preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*w.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, grace, preStop+shutdown, "ledgerd terminationGracePeriodSeconds")
}

func TestK8sPartitionsAgree(t *testing.T) {
	// Whichever service creates usage.v1 first decides its partitions; they must agree.
	m := loadK8s(t)
	byBin := m.tollgateContainers(t)
	var values []string
	for bin, name := range map[string]string{"edge": "TOLLGATE_KAFKA_PARTITIONS", "analytics": "TOLLGATE_KAFKA_PARTITIONS", "ledgerd": "TOLLGATE_KAFKA_PARTITIONS"} {
		v, ok := m.envValue(t, byBin[bin][0], name)
		require.True(t, ok, "%s: %s", bin, name)
		values = append(values, v)
	}
	slices.Sort(values)
	require.Len(t, slices.Compact(slices.Clone(values)), 1, "partition settings differ: %v", values)
}

func envDuration(t *testing.T, m *k8sManifests, c container, name string) time.Duration {
	t.Helper()
	v, ok := m.envValue(t, c, name)
	require.True(t, ok, "%s must be set", name)
	d, err := time.ParseDuration(v)
	require.NoError(t, err, name)
	return d
}

// ---- compose ----

type composeService struct {
	Image           string            `yaml:"image"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	EnvFile         any               `yaml:"env_file"`
	Ports           []string          `yaml:"ports"`
	Volumes         []string          `yaml:"volumes"`
	Profiles        []string          `yaml:"profiles"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	DependsOn       map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	docs := decodeAll(t, "compose.yaml")
	require.Len(t, docs, 1, "compose.yaml is one document")
	var f composeFile
	require.NoError(t, docs[0].Decode(&f))
	require.NotEmpty(t, f.Services)
	return f
}

func TestComposeServices(t *testing.T) {
	f := loadCompose(t)
	count := map[string]int{}
	for name, s := range f.Services {
		require.NotEmpty(t, s.Image, "service %s: image", name)
		for dep := range s.DependsOn {
			require.Contains(t, f.Services, dep, "service %s depends on an unknown service", name)
		}
		if s.Image != tollgateImageCompose {
			continue
		}
		bin := binaryOf(s.Command)
		require.Contains(t, binaries, bin, "service %s: command %v must start with %s<binary>", name, s.Command, binDir)
		if len(s.Profiles) == 0 {
			count[bin]++
		}
	}
	require.Equal(t, map[string]int{"edge": 2, "ledgerd": 1, "analytics": 1}, count, "the stack: ledgerd, analytics, two edges")
	for _, infra := range []string{"kafka", "postgres", "clickhouse"} {
		require.Contains(t, f.Services, infra)
	}
}

func TestComposeEnvAndSecrets(t *testing.T) {
	f := loadCompose(t)
	for name, s := range f.Services {
		require.Nil(t, s.EnvFile, "service %s: variables are listed in environment so their names can be checked; secrets come by interpolation", name)
		bin := binaryOf(s.Command)
		for k, v := range s.Environment {
			if !strings.HasPrefix(k, "TOLLGATE_") {
				continue
			}
			require.Equal(t, tollgateImageCompose, s.Image, "service %s sets %s but does not run Tollgate", name, k)
			require.Contains(t, envByBinary[bin], k, "%s does not take %s (deploy_test.go envByBinary)", bin, k)
			if slices.Contains(secretEnv, k) {
				require.Contains(t, v, "${", "service %s: %s is a secret: take it from the env file by interpolation", name, k)
			}
		}
		if bin == "edge" {
			require.NotContains(t, s.Environment, "TOLLGATE_ADMIN_TOKEN", "edges must not hold admin rights")
		}
	}
}

func TestComposePorts(t *testing.T) {
	f := loadCompose(t)
	for name, s := range f.Services {
		bin := binaryOf(s.Command)
		if s.Image != tollgateImageCompose {
			continue
		}
		var listening []int
		for k, port := range listenPorts[bin] {
			v, ok := s.Environment[k]
			require.True(t, ok, "service %s: %s must be set (the default may bind 127.0.0.1)", name, k)
			host, p := splitHostPort(t, v)
			require.Empty(t, host, "service %s: %s=%q: listen on every interface of the container", name, k, v)
			require.Equal(t, port, p, "service %s: %s (DESIGN §7)", name, k)
			listening = append(listening, p)
		}
		if bin == "bench" {
			i := slices.Index(s.Command, "-addr")
			require.GreaterOrEqual(t, i, 0, "service %s: -addr", name)
			_, p := splitHostPort(t, s.Command[i+1])
			require.Equal(t, portMockUpstream, p, "service %s (DESIGN §7)", name)
			listening = append(listening, p)
		}
		for _, published := range s.Ports {
			parts := strings.Split(published, ":")
			inside, err := strconv.Atoi(parts[len(parts)-1])
			require.NoError(t, err, "service %s: port %q", name, published)
			require.Contains(t, listening, inside, "service %s publishes %q, a port it does not listen on", name, published)
			if inside != portEdge {
				require.True(t, strings.HasPrefix(published, "127.0.0.1:"), "service %s: %q: only the client API is published beyond the host's loopback", name, published)
			}
		}
		if v, ok := s.Environment["TOLLGATE_KAFKA_BROKERS"]; ok {
			requireBrokers(t, v)
		}
		if bin == "edge" {
			require.Equal(t, "http://ledgerd:"+strconv.Itoa(portLedgerdInternal), s.Environment["TOLLGATE_LEDGER_URL"],
				"edges talk to ledgerd's internal listener, never the admin one")
		}
	}
	kafka := f.Services["kafka"].Environment["KAFKA_LISTENERS"]
	require.Contains(t, kafka, "PLAINTEXT://:"+strconv.Itoa(portKafka), "the broker listens on the Kafka port")
}

func TestComposeEdgesKeepTheirLogs(t *testing.T) {
	f := loadCompose(t)
	ids := map[string]string{}
	volumes := map[string]string{}
	for name, s := range f.Services {
		if binaryOf(s.Command) != "edge" {
			continue
		}
		id := s.Environment["TOLLGATE_EDGE_ID"]
		require.NotEmpty(t, id, "service %s: TOLLGATE_EDGE_ID", name)
		require.NotContains(t, ids, id, "edge ids must differ")
		ids[id] = name
		dataDir := s.Environment["TOLLGATE_DATA_DIR"]
		require.NotEmpty(t, dataDir, "service %s: TOLLGATE_DATA_DIR", name)
		var vol string
		for _, v := range s.Volumes {
			if src, dst, ok := strings.Cut(v, ":"); ok && strings.TrimSuffix(dst, ":rw") == dataDir {
				vol = src
			}
		}
		require.NotEmpty(t, vol, "service %s: a volume at TOLLGATE_DATA_DIR %q for its write-ahead log", name, dataDir)
		require.Contains(t, f.Volumes, vol, "service %s: named volume %q is declared", name, vol)
		require.NotContains(t, volumes, vol, "each edge has its own log volume (the WAL is locked by one process)")
		volumes[vol] = name

		shutdown, err := time.ParseDuration(s.Environment["TOLLGATE_SHUTDOWN_TIMEOUT"])
		require.NoError(t, err, "service %s: TOLLGATE_SHUTDOWN_TIMEOUT", name)
		flush, err := time.ParseDuration(s.Environment["TOLLGATE_RECORDS_FLUSH_TIMEOUT"])
		require.NoError(t, err, "service %s: TOLLGATE_RECORDS_FLUSH_TIMEOUT", name)
		grace, err := time.ParseDuration(s.StopGracePeriod)
		require.NoError(t, err, "service %s: stop_grace_period (compose's default is 10s)", name)
		require.Greater(t, grace, shutdown+flush, "service %s: stop_grace_period", name)
	}
	require.Len(t, ids, 2)
	ledgerd := f.Services["ledgerd"]
	shutdown, err := time.ParseDuration(ledgerd.Environment["TOLLGATE_SHUTDOWN_TIMEOUT"])
	require.NoError(t, err, "ledgerd: TOLLGATE_SHUTDOWN_TIMEOUT")
	grace, err := time.ParseDuration(ledgerd.StopGracePeriod)
	require.NoError(t, err, "ledgerd: stop_grace_period")
	require.Greater(t, grace, shutdown, "ledgerd: stop_grace_period")
}

func TestComposePartitionsAgree(t *testing.T) {
	f := loadCompose(t)
	var values []string
	for _, s := range f.Services {
		if v, ok := s.Environment["TOLLGATE_KAFKA_PARTITIONS"]; ok {
			values = append(values, v)
		}
	}
	require.NotEmpty(t, values)
	slices.Sort(values)
	require.Len(t, slices.Compact(slices.Clone(values)), 1, "partition settings differ: %v", values)
}

// ---- the binaries' own configuration ----

var envNameRe = regexp.MustCompile(`TOLLGATE_[A-Z0-9_]*[A-Z0-9]`)

// acceptedEnv collects the TOLLGATE_ names a service documents or reads: every name in its
// README and every quoted name in its non-test Go files. The edge builds most of its names
// from flag names, so for it the README's configuration table (kept identical to the code by
// the edge's own test) is what names them; ledgerd and analytics spell theirs out in code.
func acceptedEnv(t *testing.T, service string) map[string]bool {
	t.Helper()
	root := repoRoot(t)
	names := map[string]bool{}
	readme, err := os.ReadFile(filepath.Join(root, service, "README.md"))
	require.NoError(t, err)
	for _, n := range envNameRe.FindAllString(string(readme), -1) {
		names[n] = true
	}
	quoted := regexp.MustCompile(`"(TOLLGATE_[A-Z0-9_]*[A-Z0-9])"`)
	err = filepath.WalkDir(filepath.Join(root, service), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range quoted.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	require.NoError(t, err)
	return names
}

func TestEnvListAcceptedByBinaries(t *testing.T) {
	for bin, list := range envByBinary {
		if len(list) == 0 {
			continue
		}
		t.Run(bin, func(t *testing.T) {
			accepted := acceptedEnv(t, bin)
			for _, name := range list {
				require.True(t, accepted[name], "%s is neither documented in %s/README.md nor read by %s's code", name, bin, bin)
			}
		})
	}
}

func TestManifestEnvNames(t *testing.T) {
	// Every TOLLGATE_ name anywhere in the manifests, comments included, is one some binary
	// takes: a misspelt name in a comment misleads an operator as much as in a value.
	var all []string
	for _, list := range envByBinary {
		all = append(all, list...)
	}
	extra := []string{
		// compose.yaml's env file carries the analytics token under its own name.
		"TOLLGATE_ANALYTICS_TOKEN",
	}
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	require.NoError(t, err)
	for _, f := range append(files, "compose.yaml", "README.md") {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, n := range envNameRe.FindAllString(string(b), -1) {
			require.True(t, slices.Contains(all, n) || slices.Contains(extra, n), "%s names %s, which no binary takes", f, n)
		}
	}
}

// ---- Dockerfile ----

func TestDockerfileBuildsEveryBinary(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	df := string(b)
	root := repoRoot(t)
	for bin, pkg := range binaries {
		require.Contains(t, df, pkg, "Dockerfile builds %s", bin)
		_, err := os.Stat(filepath.Join(root, pkg, "main.go"))
		require.NoError(t, err, "%s is a main package", pkg)
	}
	require.Contains(t, df, "CGO_ENABLED=0", "static binaries for the distroless image")
	require.Contains(t, df, binDir, "binaries go where the manifests run them from")
	require.Regexp(t, `(?m)^USER \d+`, df, "the image runs as a non-root user id")
	// Every Go package the binaries build from must be in the build context, which the
	// ignore file must not cut.
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	require.NoError(t, err)
	for _, line := range strings.Split(string(ignore), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, keep := range []string{"go.mod", "go.sum", "edge", "ledgerd", "analytics", "pkg", "bench", "deploy"} {
			require.NotEqual(t, keep, line, "Dockerfile.dockerignore drops %s from the build", keep)
		}
	}
}

// ---- helpers ----

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err, "address %q", addr)
	p, err := strconv.Atoi(port)
	require.NoError(t, err, "address %q", addr)
	return host, p
}

func requireBrokers(t *testing.T, list string) {
	t.Helper()
	require.NotEmpty(t, list, "Kafka brokers")
	for _, b := range strings.Split(list, ",") {
		host, p := splitHostPort(t, strings.TrimSpace(b))
		require.NotEmpty(t, host, "broker %q", b)
		require.Equal(t, portKafka, p, "broker %q (DESIGN §7)", b)
	}
}

// parseBytes reads the edge's sizes (8GiB, 512MiB) and Kubernetes quantities (10Gi).
func parseBytes(t *testing.T, s string) int64 {
	t.Helper()
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			require.NoError(t, err, "size %q", s)
			return v * u.mult
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err, "size %q", s)
	return v
}
