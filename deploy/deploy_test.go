// Package deploy holds deployment examples (docker-compose.yml, k8s/); this
// test parses them and checks what they must keep saying, so that they do not
// rot as the gateway changes.
package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"nanogate/config"
)

// obj is one decoded YAML document.
type obj = map[string]any

// get walks a path of map keys and list indexes in a decoded document.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(obj)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string {
	s, _ := get(v, path...).(string)
	return s
}

func list(v any, path ...any) []any {
	l, _ := get(v, path...).([]any)
	return l
}

// readDocs decodes every document of a multi-document YAML file.
func readDocs(t *testing.T, path string) []obj {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []obj
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d obj
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
}

// parseConfig parses a gateway config as the gateway would with env as its
// environment, and fails the test on any problem.
func parseConfig(t *testing.T, data []byte, name string, env map[string]string) *config.Config {
	t.Helper()
	cfg, warnings, err := config.Parse(data, name, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	if err != nil {
		t.Fatalf("%s does not parse with the deployment's environment:\n%v", name, err)
	}
	for _, w := range warnings {
		t.Logf("%s: warning: %s", name, w)
	}
	if cfg.Redis == nil || len(cfg.Redis.Addrs) == 0 {
		t.Fatalf("%s: no redis block: replicas would not share limits", name)
	}
	uncommented := regexp.MustCompile(`(?m)(^|\s)#.*$`).ReplaceAllString(string(data), "")
	for _, ref := range regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`).FindAllStringSubmatch(uncommented, -1) {
		if _, ok := env[ref[1]]; !ok {
			t.Errorf("%s: ${%s} has no default and the deployment does not set it", name, ref[1])
		}
	}
	return cfg
}

func TestKubernetes(t *testing.T) {
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in k8s/: %v", err)
	}
	byKind := map[string]map[string]obj{}
	for _, f := range files {
		for _, d := range readDocs(t, f) {
			kind, name := str(d, "kind"), str(d, "metadata", "name")
			if byKind[kind] == nil {
				byKind[kind] = map[string]obj{}
			}
			byKind[kind][name] = d
		}
	}
	// The kustomization applies every manifest.
	var listed []string
	for _, r := range list(byKind["Kustomization"][""], "resources") {
		listed = append(listed, r.(string))
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(listed, b) {
			t.Errorf("kustomization.yaml does not list %s", b)
		}
	}

	dep := byKind["StatefulSet"]["nanogate"]
	if dep == nil {
		t.Fatal("no StatefulSet nanogate")
	}
	// data_dir (the usage spool) outlives the pod.
	if claims := list(dep, "spec", "volumeClaimTemplates"); len(claims) != 1 || str(claims[0], "metadata", "name") != "data" {
		t.Errorf("volumeClaimTemplates %v: want one named data", claims)
	}
	if r := get(dep, "spec", "replicas"); r != 2 {
		t.Errorf("replicas = %v, want 2", r)
	}
	pod := get(dep, "spec", "template", "spec")
	c := get(pod, "containers", 0)
	ports := map[string]bool{}
	for _, p := range list(c, "ports") {
		ports[str(p, "name")] = true
	}
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		if got := str(c, probe, "httpGet", "path"); got != path {
			t.Errorf("%s path %q, want %s", probe, got, path)
		}
		if port := str(c, probe, "httpGet", "port"); !ports[port] {
			t.Errorf("%s port %q is not a port of the container", probe, port)
		}
	}
	if get(pod, "securityContext", "runAsNonRoot") != true || get(pod, "securityContext", "runAsUser") == 0 {
		t.Errorf("pod securityContext %v: want non-root", get(pod, "securityContext"))
	}
	if get(c, "securityContext", "allowPrivilegeEscalation") != false || get(c, "securityContext", "readOnlyRootFilesystem") != true {
		t.Errorf("container securityContext %v", get(c, "securityContext"))
	}
	for _, sel := range []obj{get(dep, "spec", "selector", "matchLabels").(obj), get(byKind["Service"]["nanogate"], "spec", "selector").(obj)} {
		for k, v := range sel {
			if str(dep, "spec", "template", "metadata", "labels", k) != v {
				t.Errorf("selector %s=%v does not match the pod's labels", k, v)
			}
		}
	}
	if tp := str(byKind["Service"]["nanogate"], "spec", "ports", 0, "targetPort"); !ports[tp] {
		t.Errorf("Service targetPort %q is not a port of the container", tp)
	}

	// The config the pods read: the ConfigMap mounted where args point.
	var cmName string
	for _, v := range list(pod, "volumes") {
		for _, m := range list(c, "volumeMounts") {
			if str(m, "name") == str(v, "name") && str(m, "mountPath") == "/etc/nanogate" {
				cmName = str(v, "configMap", "name")
			}
		}
	}
	if args := list(c, "args"); !slices.Contains(args, any("/etc/nanogate/config.yaml")) {
		t.Errorf("args %v do not read /etc/nanogate/config.yaml", args)
	}
	cm := byKind["ConfigMap"][cmName]
	if cm == nil {
		t.Fatalf("the ConfigMap %q mounted at /etc/nanogate does not exist", cmName)
	}
	data := str(cm, "data", "config.yaml")
	compose, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if data != string(compose) {
		t.Error("k8s/configmap.yaml's config.yaml differs from deploy/config.yaml")
	}

	// The pods' environment: the Secret (envFrom) and env values.
	env := map[string]string{}
	for _, ef := range list(c, "envFrom") {
		name := str(ef, "secretRef", "name")
		s := byKind["Secret"][name]
		if s == nil {
			t.Fatalf("envFrom names the Secret %q, which does not exist", name)
		}
		for k, v := range get(s, "stringData").(obj) {
			env[k] = v.(string)
		}
	}
	for _, e := range list(c, "env") {
		env[str(e, "name")] = str(e, "value")
	}
	cfg := parseConfig(t, []byte(data), "k8s/configmap.yaml", env)
	if grace := get(pod, "terminationGracePeriodSeconds").(int); time.Duration(grace)*time.Second <= cfg.Server.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %d is not longer than shutdown_timeout %v", grace, cfg.Server.ShutdownTimeout)
	}
	checkMemory(t, "k8s/deployment.yaml", quantity(t, str(c, "resources", "limits", "memory")), cfg)
	if cfg.LinkStore().Store != "s3" {
		t.Error("the base manifests' replicas issue image links from a filesystem store of their own: set up s3")
	}
	if host := cfg.Redis.Addrs[0]; byKind["Service"][strings.Split(host, ":")[0]] == nil {
		t.Logf("redis address %s is not a Service of these manifests (a managed Redis?)", host)
	}
}

var composeRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}`)

// composeEnv resolves a compose environment value: ${X:-default},
// ${X:?message} and ${X} from vars (X absent: the default, or "set-X").
func composeEnv(v string, vars map[string]string) string {
	return composeRef.ReplaceAllStringFunc(v, func(ref string) string {
		m := composeRef.FindStringSubmatch(ref)
		if val, ok := vars[m[1]]; ok && val != "" {
			return val
		}
		if m[2] == "-" {
			return m[3]
		}
		return "set-" + m[1]
	})
}

func TestCompose(t *testing.T) {
	docs := readDocs(t, "docker-compose.yml")
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	services, _ := get(docs[0], "services").(obj)
	var gateways []string
	var redisName string
	for name, s := range services {
		switch {
		case get(s, "build") != nil && strings.HasPrefix(str(s, "image"), "nanogate"):
			gateways = append(gateways, name)
		case strings.HasPrefix(str(s, "image"), "redis:"):
			redisName = name
		}
	}
	slices.Sort(gateways)
	imageVolumes := map[string]int{}
	if len(gateways) != 2 {
		t.Fatalf("gateway services %v, want 2", gateways)
	}
	if redisName == "" {
		t.Fatal("no redis service")
	}
	front := services["front"]
	if len(list(front, "ports")) == 0 {
		t.Fatal("the front publishes no port")
	}
	nginx, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list(front, "volumes"), func(v any) bool { return strings.HasPrefix(v.(string), "./nginx.conf:") }) {
		t.Error("the front does not mount nginx.conf")
	}
	data, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gateways {
		s := services[g]
		if !slices.ContainsFunc(list(s, "volumes"), func(v any) bool {
			return strings.HasPrefix(v.(string), "./config.yaml:/etc/nanogate/config.yaml")
		}) {
			t.Errorf("%s does not mount config.yaml at /etc/nanogate/config.yaml", g)
		}
		if !regexp.MustCompile(`server\s+` + g + `:8080`).Match(nginx) {
			t.Errorf("nginx.conf's upstream does not include %s:8080", g)
		}
		env := map[string]string{}
		// As its header says to run it: with a client key and a provider key.
		host := map[string]string{"DESIGN_CI_KEY": "sk-design-ci-from-the-host", "LAOZHANG_API_KEY": "lz-from-the-host"}
		for k, v := range get(s, "environment").(obj) {
			env[k] = composeEnv(v.(string), host)
		}
		cfg := parseConfig(t, data, "config.yaml ("+g+")", env)
		if host := strings.Split(cfg.Redis.Addrs[0], ":")[0]; host != redisName {
			t.Errorf("%s: redis address %s, want the %s service", g, cfg.Redis.Addrs[0], redisName)
		}
		grace, err := time.ParseDuration(str(s, "stop_grace_period"))
		if err != nil || grace <= cfg.Server.ShutdownTimeout {
			t.Errorf("%s: stop_grace_period %q is not longer than shutdown_timeout %v", g, str(s, "stop_grace_period"), cfg.Server.ShutdownTimeout)
		}
		if get(s, "depends_on", redisName) == nil {
			t.Errorf("%s does not depend on %s", g, redisName)
		}
		checkMemory(t, g, quantity(t, str(s, "mem_limit")), cfg)
		if ls := cfg.LinkStore(); ls.Store == "filesystem" {
			vol := ""
			for _, v := range list(s, "volumes") {
				if src, dst, ok := strings.Cut(v.(string), ":"); ok && strings.TrimSuffix(dst, ":ro") == ls.Dir {
					vol = src
				}
			}
			named, _ := get(docs[0], "volumes").(obj)
			if _, ok := named[vol]; !ok || vol == "" {
				t.Errorf("%s: the image store's directory %s is not on a named volume", g, ls.Dir)
			}
			imageVolumes[vol]++
		}
	}
	for vol, n := range imageVolumes {
		if n != len(gateways) {
			t.Errorf("the image volume %s is mounted by %d of %d replicas: links would not work on the others", vol, n, len(gateways))
		}
	}
}

// checkMemory: the Go heap's limit fits in the container's, with room for
// what the runtime does not count, and the in-flight bound in the heap's.
func checkMemory(t *testing.T, name string, container int64, cfg *config.Config) {
	t.Helper()
	limit, inflight := int64(cfg.Server.MemoryLimit), int64(cfg.Server.MaxBytesInFlight)
	if limit <= 0 || limit > container*95/100 {
		t.Errorf("%s: server.memory_limit %d does not leave 5%% of the container's %d", name, limit, container)
	}
	if inflight <= 0 || inflight > limit/2 {
		t.Errorf("%s: server.max_bytes_in_flight %d is not within half of memory_limit %d", name, inflight, limit)
	}
}

// quantity reads a memory size as Kubernetes (512Mi, 1Gi) or compose (512m,
// 1g) write it.
func quantity(t *testing.T, q string) int64 {
	t.Helper()
	for suffix, mult := range map[string]int64{"Mi": 1 << 20, "Gi": 1 << 30, "m": 1 << 20, "g": 1 << 30} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err == nil && v > 0 {
				return v * mult
			}
		}
	}
	t.Fatalf("memory size %q: want a number with Mi, Gi, m or g", q)
	return 0
}

// TestAlertsAndDashboardNameExportedMetrics: every metric the alert rules
// and the Grafana dashboard query is one nanogate exports, and both files
// parse.
func TestAlertsAndDashboardNameExportedMetrics(t *testing.T) {
	var exported []string
	for _, src := range []string{"../metrics/metrics.go", "../main.go"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`Name: +"(nanogate_[a-z0-9_]+)"`).FindAllSubmatch(b, -1) {
			exported = append(exported, string(m[1]))
		}
	}
	if len(exported) < 10 {
		t.Fatalf("found %d exported metrics", len(exported))
	}
	known := func(name string) bool {
		for _, suffix := range []string{"", "_bucket", "_count", "_sum"} {
			if slices.Contains(exported, strings.TrimSuffix(name, suffix)) && (suffix == "" || strings.HasSuffix(name, suffix)) {
				return true
			}
		}
		return false
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil || len(rules.Groups) == 0 {
		t.Fatalf("alerts.yaml: %v", err)
	}
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("a rule without alert or expr: %+v", r)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b, err = os.ReadFile("grafana/nanogate.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil || len(dash.Panels) == 0 {
		t.Fatalf("grafana/nanogate.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, e := range exprs {
		for _, name := range regexp.MustCompile(`nanogate_[a-z0-9_]+`).FindAllString(e, -1) {
			if !known(name) {
				t.Errorf("%q queries %s, which nanogate does not export", e, name)
			}
		}
	}
}

// TestSharedImagesOverlay: the overlay for clusters without S3 mounts one
// ReadWriteMany volume at images.offload.dir in every replica and switches
// the store to it.
func TestSharedImagesOverlay(t *testing.T) {
	docs := map[string]obj{}
	for _, f := range []string{"kustomization.yaml", "images-volume.yaml", "statefulset-patch.yaml"} {
		d := readDocs(t, filepath.Join("k8s-shared-images", f))
		if len(d) != 1 {
			t.Fatalf("%s: %d documents", f, len(d))
		}
		docs[f] = d[0]
	}
	var res []string
	for _, r := range list(docs["kustomization.yaml"], "resources") {
		res = append(res, r.(string))
	}
	if !slices.Contains(res, "../k8s") || !slices.Contains(res, "images-volume.yaml") ||
		str(docs["kustomization.yaml"], "patches", 0, "path") != "statefulset-patch.yaml" {
		t.Errorf("kustomization: resources %v, patches %v", res, get(docs["kustomization.yaml"], "patches"))
	}
	pvc := docs["images-volume.yaml"]
	if !slices.Contains(list(pvc, "spec", "accessModes"), any("ReadWriteMany")) {
		t.Errorf("the images volume is not ReadWriteMany: %v", get(pvc, "spec", "accessModes"))
	}
	patch := docs["statefulset-patch.yaml"]
	c := get(patch, "spec", "template", "spec", "containers", 0)
	env := map[string]string{"REDIS_ADDR": "redis:6379", "DESIGN_CI_KEY": "sk-0123456789abcdef", "LAOZHANG_API_KEY": "k"}
	for _, e := range list(c, "env") {
		env[str(e, "name")] = str(e, "value")
	}
	data, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, data, "config.yaml (k8s-shared-images)", env)
	ls := cfg.LinkStore()
	if ls.Store != "filesystem" {
		t.Fatalf("the overlay's replicas issue links from %q, want the filesystem store", ls.Store)
	}
	mounted := false
	for _, m := range list(c, "volumeMounts") {
		for _, v := range list(patch, "spec", "template", "spec", "volumes") {
			if str(m, "name") == str(v, "name") && str(m, "mountPath") == ls.Dir &&
				str(v, "persistentVolumeClaim", "claimName") == str(pvc, "metadata", "name") {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("images.offload.dir %s is not the shared volume's mount", ls.Dir)
	}
}
