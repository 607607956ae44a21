package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/cloudformation/efs"
	"github.com/awslabs/goformation/v7/cloudformation/global"
	"github.com/awslabs/goformation/v7/cloudformation/serverless"
	"github.com/awslabs/goformation/v7/intrinsics"

	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
)

const (
	templateFile = "../template.yaml"
	makefile     = "../Makefile"
	configSource = "../config/config.go"
	readme       = "../README.md"
)

// Functions of the template and the main package each one builds.
var functions = map[string]string{
	"ExecuteFunction": "./functions/execute",
	"ProjectFunction": "./functions/project",
}

// Routes only the local runner serves.
var localOnlyRoutes = []string{"/healthz", "/metrics"}

// placeholderOptions resolve intrinsic functions to values of the shape the
// typed template needs, so that a property whose value is an intrinsic is
// kept by the typed round trip (goformation's own handlers resolve most of
// them to null, which the typed structs then omit). A Ref to a list
// parameter becomes a list of two distinct elements.
func placeholderOptions() *intrinsics.ProcessorOptions {
	return &intrinsics.ProcessorOptions{IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{
		"Ref": func(_ string, input, template any) any {
			name := fmt.Sprint(input)
			tpl, _ := asMap(template)
			if params, ok := asMap(tpl["Parameters"]); ok {
				if p, ok := asMap(params[name]); ok {
					if t, _ := p["Type"].(string); strings.HasPrefix(t, "List<") || t == "CommaDelimitedList" {
						return []any{"ref:" + name + "[0]", "ref:" + name + "[1]"}
					}
				}
			}
			return "ref:" + name
		},
		"Fn::GetAtt": func(_ string, input, _ any) any {
			if parts, ok := input.([]any); ok {
				s := make([]string, len(parts))
				for i, p := range parts {
					s[i] = fmt.Sprint(p)
				}
				return "getatt:" + strings.Join(s, ".")
			}
			return "getatt:" + fmt.Sprint(input)
		},
		"Fn::Sub": func(_ string, input, _ any) any {
			if parts, ok := input.([]any); ok && len(parts) > 0 {
				return "sub:" + fmt.Sprint(parts[0])
			}
			return "sub:" + fmt.Sprint(input)
		},
	}}
}

func asMap(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	return m, ok
}

// checkKnownProperties parses the template at path into goformation's
// typed model and fails when any key of the template does not survive a
// round trip through it. goformation rejects unknown keys directly under a
// resource's Properties, but drops without an error those it does not know
// in Globals and in values of several possible shapes (event properties,
// policies). The error lists every dropped key path.
func checkKnownProperties(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	processed, err := intrinsics.ProcessYAML(data, placeholderOptions())
	if err != nil {
		return fmt.Errorf("process intrinsics: %w", err)
	}
	typed, err := goformation.ParseJSONWithOptions(processed, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return fmt.Errorf("typed parse: %w", err)
	}
	roundTrip, err := json.Marshal(typed)
	if err != nil {
		return fmt.Errorf("marshal typed template: %w", err)
	}
	var original, back any
	if err := json.Unmarshal(processed, &original); err != nil {
		return err
	}
	if err := json.Unmarshal(roundTrip, &back); err != nil {
		return err
	}
	want, got := map[string]bool{}, map[string]bool{}
	keyPaths("", original, want)
	keyPaths("", back, got)
	var dropped []string
	for p := range want {
		if !got[p] {
			dropped = append(dropped, p)
		}
	}
	if len(dropped) > 0 {
		sort.Strings(dropped)
		return fmt.Errorf("properties the typed template does not know (dropped by goformation): %s", strings.Join(dropped, ", "))
	}
	return nil
}

// keyPaths records the path of every object key under v.
func keyPaths(prefix string, v any, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			out[p] = true
			keyPaths(p, child, out)
		}
	case []any:
		for i, child := range v {
			keyPaths(fmt.Sprintf("%s[%d]", prefix, i), child, out)
		}
	}
}

func TestTemplateHasOnlyKnownProperties(t *testing.T) {
	if _, err := goformation.Open(templateFile); err != nil {
		t.Fatalf("goformation.Open(%s): %v", templateFile, err)
	}
	if err := checkKnownProperties(templateFile); err != nil {
		t.Fatal(err)
	}
}

func TestKnownPropertiesCheckCatchesUnknownProperty(t *testing.T) {
	data, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	// Each case adds an unknown key beside the first occurrence of a known
	// one, at the same indentation.
	cases := map[string]struct{ beside, unknown string }{
		"global property":   {"Runtime", "Runtme"},
		"efs property":      {"PerformanceMode", "PerformanceMod"},
		"function property": {"ReservedConcurrentExecutions", "ReservedConcurrency"},
		"event property":    {"Path", "Paht"},
		"mount property":    {"LocalMountPath", "LocalMountPaht"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			line := regexp.MustCompile(`(?m)^( +)` + c.beside + `: .*\n`)
			loc := line.FindSubmatchIndex(data)
			if loc == nil {
				t.Fatalf("template has no %s key to add %s beside", c.beside, c.unknown)
			}
			indent := string(data[loc[2]:loc[3]])
			bad := string(data[:loc[1]]) + indent + c.unknown + ": x\n" + string(data[loc[1]:])
			path := filepath.Join(t.TempDir(), "template.yaml")
			if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
				t.Fatal(err)
			}
			err := checkKnownProperties(path)
			if err == nil {
				t.Fatalf("a template with %s beside %s passed the unknown-property check", c.unknown, c.beside)
			}
			if !strings.Contains(err.Error(), c.unknown) {
				t.Fatalf("error does not name %s: %v", c.unknown, err)
			}
		})
	}
}

// parsed is the template as typed resources, with intrinsics resolved to
// placeholders so that references can be checked.
type parsed struct {
	tpl     *cloudformation.Template
	globals *global.Function
}

func parseTemplate(t *testing.T) parsed {
	t.Helper()
	tpl, err := goformation.OpenWithOptions(templateFile, placeholderOptions())
	if err != nil {
		t.Fatalf("parse %s: %v", templateFile, err)
	}
	p := parsed{tpl: tpl}
	if g, ok := tpl.Globals["Function"]; ok {
		gf, ok := g.(*global.Function)
		if !ok {
			t.Fatalf("Globals.Function is %T", g)
		}
		p.globals = gf
	}
	return p
}

func (p parsed) function(t *testing.T, name string) *serverless.Function {
	t.Helper()
	f, err := p.tpl.GetServerlessFunctionWithName(name)
	if err != nil {
		t.Fatalf("resource %s: %v", name, err)
	}
	return f
}

// str returns the function's own value, else the global one.
func str(own *string, global *string) string {
	if own != nil {
		return *own
	}
	if global != nil {
		return *global
	}
	return ""
}

func (p parsed) runtime(f *serverless.Function) string {
	var g *string
	if p.globals != nil {
		g = p.globals.Runtime
	}
	return str(f.Runtime, g)
}

func (p parsed) handler(f *serverless.Function) string {
	var g *string
	if p.globals != nil {
		g = p.globals.Handler
	}
	return str(f.Handler, g)
}

func (p parsed) architectures(f *serverless.Function) []string {
	if f.Architectures != nil {
		return f.Architectures
	}
	if p.globals != nil && p.globals.Architectures != nil {
		return *p.globals.Architectures
	}
	return nil
}

// environment merges the global variables with the function's own.
func (p parsed) environment(f *serverless.Function) map[string]string {
	env := map[string]string{}
	if p.globals != nil && p.globals.Environment != nil {
		for k, v := range p.globals.Environment.Variables {
			env[k] = fmt.Sprint(v)
		}
	}
	if f.Environment != nil {
		for k, v := range f.Environment.Variables {
			env[k] = fmt.Sprint(v)
		}
	}
	return env
}

func TestFunctionsBuildFromTheMakefile(t *testing.T) {
	p := parseTemplate(t)
	mk, err := os.ReadFile(makefile)
	if err != nil {
		t.Fatal(err)
	}
	for name, pkg := range functions {
		t.Run(name, func(t *testing.T) {
			f := p.function(t, name)
			if got := p.runtime(f); got != "provided.al2023" {
				t.Errorf("Runtime = %q, want provided.al2023", got)
			}
			if got := p.handler(f); got != "bootstrap" {
				t.Errorf("Handler = %q, want bootstrap", got)
			}
			if got := p.architectures(f); !slices.Equal(got, []string{"arm64"}) {
				t.Errorf("Architectures = %v, want [arm64]", got)
			}
			if got := f.AWSCloudFormationMetadata["BuildMethod"]; got != "makefile" {
				t.Errorf("Metadata.BuildMethod = %v, want makefile", got)
			}
			recipe := makeRecipe(string(mk), "build-"+name)
			if recipe == "" {
				t.Fatalf("Makefile has no build-%s target (sam build calls it)", name)
			}
			for _, want := range []string{"$(ARTIFACTS_DIR)/bootstrap", pkg, "GOOS=linux", "GOARCH=arm64"} {
				if !strings.Contains(recipe, want) {
					t.Errorf("build-%s recipe %q does not contain %q", name, recipe, want)
				}
			}
			if _, err := exec.LookPath("make"); err != nil {
				return
			}
			out, err := exec.Command("make", "-n", "-C", "..", "build-"+name, "ARTIFACTS_DIR=/artifacts").CombinedOutput()
			if err != nil {
				t.Fatalf("make -n build-%s: %v\n%s", name, err, out)
			}
			for _, want := range []string{"CGO_ENABLED=0", "-tags lambda.norpc", "-o /artifacts/bootstrap " + pkg} {
				if !strings.Contains(string(out), want) {
					t.Errorf("make -n build-%s runs %q, without %q", name, out, want)
				}
			}
		})
	}
}

// makeRecipe returns the recipe lines of a Makefile target.
func makeRecipe(mk, target string) string {
	var recipe []string
	in := false
	for _, line := range strings.Split(mk, "\n") {
		switch {
		case strings.HasPrefix(line, target+":"):
			in = true
		case in && strings.HasPrefix(line, "\t"):
			recipe = append(recipe, strings.TrimSpace(line))
		case in:
			return strings.Join(recipe, "\n")
		}
	}
	return strings.Join(recipe, "\n")
}

func TestExecuteFunctionIsTheSingleWriter(t *testing.T) {
	f := parseTemplate(t).function(t, "ExecuteFunction")
	if f.ReservedConcurrentExecutions == nil {
		t.Fatal("ExecuteFunction has no ReservedConcurrentExecutions; want 1")
	}
	if n := *f.ReservedConcurrentExecutions; n != 1 {
		t.Fatalf("ExecuteFunction ReservedConcurrentExecutions = %d, want 1", n)
	}
}

func TestHTTPAPIUsesIAMAuthorization(t *testing.T) {
	p := parseTemplate(t)
	apis := p.tpl.GetAllServerlessHttpApiResources()
	if len(apis) != 1 {
		t.Fatalf("template has %d HTTP APIs, want 1", len(apis))
	}
	for name, api := range apis {
		if api.Auth == nil || api.Auth.DefaultAuthorizer == nil || *api.Auth.DefaultAuthorizer != "AWS_IAM" {
			t.Fatalf("HTTP API %s: default authorizer is not AWS_IAM: %+v", name, api.Auth)
		}
	}
}

func TestDatabasesAreOnEFS(t *testing.T) {
	p := parseTemplate(t)
	filesystems := p.tpl.GetAllEFSFileSystemResources()
	if len(filesystems) != 1 {
		t.Fatalf("template has %d EFS file systems, want 1", len(filesystems))
	}
	var fsName string
	for name := range filesystems {
		fsName = name
	}
	mounts := p.tpl.GetAllEFSMountTargetResources()
	if len(mounts) != 2 {
		t.Fatalf("template has %d EFS mount targets, want 2", len(mounts))
	}
	subnets := map[string]bool{}
	for name, m := range mounts {
		if m.FileSystemId != "ref:"+fsName {
			t.Errorf("mount target %s is on %q, not the file system %s", name, m.FileSystemId, fsName)
		}
		subnets[m.SubnetId] = true
	}
	if len(subnets) != 2 {
		t.Errorf("both mount targets are in the same subnet: %v", subnets)
	}
	points := p.tpl.GetAllEFSAccessPointResources()
	if len(points) != 1 {
		t.Fatalf("template has %d EFS access points, want 1", len(points))
	}
	var apName string
	var ap *efs.AccessPoint
	for name, a := range points {
		apName, ap = name, a
	}
	if ap.FileSystemId != "ref:"+fsName {
		t.Errorf("access point is on %q, not the file system %s", ap.FileSystemId, fsName)
	}
	for name := range functions {
		t.Run(name, func(t *testing.T) {
			f := p.function(t, name)
			if len(f.FileSystemConfigs) != 1 {
				t.Fatalf("%d FileSystemConfigs, want 1", len(f.FileSystemConfigs))
			}
			fsc := f.FileSystemConfigs[0]
			if fsc.Arn == nil || *fsc.Arn != "getatt:"+apName+".Arn" {
				t.Errorf("FileSystemConfigs Arn = %v, want the access point's Arn", fsc.Arn)
			}
			mount := ""
			if fsc.LocalMountPath != nil {
				mount = *fsc.LocalMountPath
			}
			if !strings.HasPrefix(mount, "/mnt/") {
				t.Fatalf("LocalMountPath %q is not under /mnt/", mount)
			}
			if f.VpcConfig == nil && (p.globals == nil || p.globals.VpcConfig == nil) {
				t.Errorf("no VpcConfig: EFS needs the function in the VPC")
			}
			env := p.environment(f)
			if env["EVENTCORE_JOURNAL"] != "truncate" {
				t.Errorf("EVENTCORE_JOURNAL = %q, want truncate (WAL does not work over NFS)", env["EVENTCORE_JOURNAL"])
			}
			for _, v := range []string{"EVENTCORE_DB", "EVENTCORE_READ_DB"} {
				if !strings.HasPrefix(env[v], strings.TrimSuffix(mount, "/")+"/") {
					t.Errorf("%s = %q, not under the mount %s", v, env[v], mount)
				}
			}
			if env["EVENTCORE_DB"] == env["EVENTCORE_READ_DB"] {
				t.Errorf("EVENTCORE_DB and EVENTCORE_READ_DB are the same file")
			}
		})
	}
}

var envName = regexp.MustCompile(`"((?:EVENTCORE|AWS)_[A-Z0-9_]+)"`)

// configVariables are the variable names config.Load reads.
func configVariables(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(configSource)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range envName.FindAllStringSubmatch(string(src), -1) {
		names[m[1]] = true
	}
	if !names["EVENTCORE_DB"] || !names["EVENTCORE_READ_DB"] {
		t.Fatalf("found no EVENTCORE_DB/EVENTCORE_READ_DB in %s: %v", configSource, names)
	}
	return names
}

// readmeVariables are the variables of the README's Configuration table.
func readmeVariables(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "## Configuration")
	if start < 0 {
		t.Fatal("README has no Configuration section")
	}
	section := text[start+len("## Configuration"):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	names := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `(EVENTCORE_[A-Z0-9_]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		names[m[1]] = true
	}
	if len(names) == 0 {
		t.Fatal("README's Configuration section has no variable table")
	}
	return names
}

func TestEnvironmentVariablesAreKnown(t *testing.T) {
	p := parseTemplate(t)
	known := configVariables(t)
	documented := readmeVariables(t)
	for name := range functions {
		for v := range p.environment(p.function(t, name)) {
			if !known[v] {
				t.Errorf("%s sets %s, which config.Load does not read", name, v)
			}
			if !documented[v] {
				t.Errorf("%s sets %s, which the README's Configuration table does not document", name, v)
			}
		}
	}
	for v := range documented {
		if !known[v] {
			t.Errorf("README documents %s, which config.Load does not read", v)
		}
	}
	var undocumented []string
	for v := range known {
		if strings.HasPrefix(v, "EVENTCORE_") && !documented[v] {
			undocumented = append(undocumented, v)
		}
	}
	if len(undocumented) > 0 {
		sort.Strings(undocumented)
		t.Logf("config.Load reads variables the README's table does not list: %v", undocumented)
	}
}

func TestProjectFunctionRunsOnASchedule(t *testing.T) {
	f := parseTemplate(t).function(t, "ProjectFunction")
	for name, e := range f.Events {
		if e.Type == "Schedule" {
			if e.Properties == nil || e.Properties.ScheduleEvent == nil || e.Properties.ScheduleEvent.Schedule == "" {
				t.Fatalf("Schedule event %s has no schedule", name)
			}
			return
		}
	}
	t.Fatal("ProjectFunction has no Schedule event")
}

type httpRoute struct{ method, path string }

func (r httpRoute) String() string { return r.method + " " + r.path }

// templateRoutes are the HttpApi events of a function, all on the
// template's HTTP API.
func templateRoutes(t *testing.T, p parsed, name string) map[httpRoute]bool {
	t.Helper()
	var apiName string
	for n := range p.tpl.GetAllServerlessHttpApiResources() {
		apiName = n
	}
	routes := map[httpRoute]bool{}
	for ev, e := range p.function(t, name).Events {
		if e.Type != "HttpApi" {
			continue
		}
		if e.Properties == nil || e.Properties.HttpApiEvent == nil {
			t.Fatalf("%s event %s: HttpApi event without properties", name, ev)
		}
		h := e.Properties.HttpApiEvent
		if h.ApiId == nil || *h.ApiId != "ref:"+apiName {
			t.Errorf("%s event %s is not on the HTTP API %s: ApiId %v", name, ev, apiName, h.ApiId)
		}
		if h.Method == nil || h.Path == nil {
			t.Fatalf("%s event %s has no Method or Path", name, ev)
		}
		r := httpRoute{strings.ToUpper(*h.Method), *h.Path}
		if routes[r] {
			t.Errorf("%s: route %s twice", name, r)
		}
		routes[r] = true
	}
	return routes
}

func compareRoutes(t *testing.T, fn string, inTemplate, served map[httpRoute]bool) {
	t.Helper()
	if err := diffRoutes(inTemplate, served); err != nil {
		t.Errorf("%s:\n%v", fn, err)
	}
}

func withoutLocalOnly(routes map[httpRoute]bool) map[httpRoute]bool {
	out := map[httpRoute]bool{}
	for r := range routes {
		if !slices.Contains(localOnlyRoutes, r.path) {
			out[r] = true
		}
	}
	return out
}

func TestRoutesMatchTheHandlers(t *testing.T) {
	p := parseTemplate(t)

	compareRoutes(t, "ExecuteFunction",
		withoutLocalOnly(templateRoutes(t, p, "ExecuteFunction")),
		map[httpRoute]bool{{http.MethodPost, handler.CommandRoute}: true})

	reg := handler.NewRegistry()
	bankapi.Register(reg)
	served := map[httpRoute]bool{}
	for _, path := range handler.ReadRoutes(reg) {
		served[httpRoute{http.MethodGet, path}] = true
	}
	if len(served) < 5 {
		t.Fatalf("ReadRoutes serves only %v", served)
	}
	compareRoutes(t, "ProjectFunction", withoutLocalOnly(templateRoutes(t, p, "ProjectFunction")), withoutLocalOnly(served))
}

func TestRouteComparisonFailsBothWays(t *testing.T) {
	a := map[httpRoute]bool{{"GET", "/a"}: true}
	b := map[httpRoute]bool{{"GET", "/b"}: true}
	for _, c := range []struct{ tpl, served map[httpRoute]bool }{{a, nil}, {nil, a}, {a, b}} {
		if diffRoutes(c.tpl, c.served) == nil {
			t.Errorf("routes %v in the template and %v served compare equal", c.tpl, c.served)
		}
	}
	if err := diffRoutes(a, a); err != nil {
		t.Errorf("equal routes differ: %v", err)
	}
}

// diffRoutes names every route only the template has and every route only
// the handler serves.
func diffRoutes(inTemplate, served map[httpRoute]bool) error {
	var diff []string
	for r := range inTemplate {
		if !served[r] {
			diff = append(diff, "the template routes "+r.String()+", which the handler does not serve")
		}
	}
	for r := range served {
		if !inTemplate[r] {
			diff = append(diff, "the handler serves "+r.String()+", which the template does not route")
		}
	}
	if len(diff) == 0 {
		return nil
	}
	sort.Strings(diff)
	return errors.New(strings.Join(diff, "\n"))
}
