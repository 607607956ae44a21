package deploy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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

	"github.com/eventcore-go/eventcore/config"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
	"github.com/eventcore-go/eventcore/handler"
)

const (
	templateFile = "../template.yaml"
	makefile     = "../Makefile"
	configSource = "../config/config.go"
	readme       = "../README.md"
)

// Functions of the template and the main package each one builds. A
// deployment creates the execute function of its Compute (see
// parsed.executeFunction) and the project function.
var functions = map[string]string{
	"ExecuteFunction":        "./functions/execute",
	"ExecuteManagedFunction": "./functions/execute",
	"ProjectFunction":        "./functions/project",
}

// Routes only the local runner serves.
var localOnlyRoutes = []string{"/healthz", "/metrics"}

// Values of the template's StorageMode parameter.
var storageModes = []string{"efs", "litestream", "postgres"}

// Values of the template's Compute parameter.
var computes = []string{"lambda", "managed-instances"}

// deployment is one combination of the parameters that select the
// template's shape: StorageMode and Compute.
type deployment struct{ mode, compute string }

func (d deployment) String() string {
	if d.compute == "lambda" {
		return d.mode
	}
	return d.mode + "+" + d.compute
}

// overrides are the parameter values of d, for resolve.
func (d deployment) overrides() map[string]any {
	return map[string]any{"StorageMode": d.mode, "Compute": d.compute}
}

// deployments are the combinations of StorageMode and Compute the
// template's rules accept (TestDeploymentsAreTheAcceptedCombinations checks
// it): efs with managed-instances is refused. Every test of the template's
// content runs in each of them, since CloudFormation deploys the template
// as its conditions select it.
var deployments = []deployment{
	{"efs", "lambda"},
	{"litestream", "lambda"},
	{"litestream", "managed-instances"},
	{"postgres", "lambda"},
	{"postgres", "managed-instances"},
}

// noValue stands for Ref AWS::NoValue until resolve removes the property
// or list element that holds it, as CloudFormation does.
const noValue = "<AWS::NoValue>"

// conditionValues evaluates the template's Conditions with the parameter
// values params (the other parameters at their defaults), with goformation's
// own handlers. goformation's EvaluateConditions option is used only for
// this: it also replaces every resource that has a Condition attribute by
// the condition's value, so the typed parse of its output fails.
func conditionValues(data []byte, params map[string]any) (map[string]bool, error) {
	processed, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{ParameterOverrides: params, EvaluateConditions: true})
	if err != nil {
		return nil, fmt.Errorf("evaluate conditions: %w", err)
	}
	var tpl struct{ Conditions map[string]any }
	if err := json.Unmarshal(processed, &tpl); err != nil {
		return nil, err
	}
	values := map[string]bool{}
	for name, v := range tpl.Conditions {
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("condition %s does not evaluate to true or false: %v", name, v)
		}
		values[name] = b
	}
	return values, nil
}

// placeholderOptions resolve intrinsic functions to values of the shape the
// typed template needs, so that a property whose value is an intrinsic is
// kept by the typed round trip (goformation's own handlers resolve most of
// them to null, which the typed structs then omit, and its Fn::If resolves
// to null unless EvaluateConditions is on). A Ref to a list parameter
// becomes a list of two distinct elements, a Ref to a Number parameter its
// value (its default, or its value in ParameterOverrides), Ref AWS::NoValue
// the noValue marker. Fn::If picks its branch by conditions; an Fn::If on
// an unknown condition is reported through fail.
func placeholderOptions(conditions map[string]bool, fail func(error)) *intrinsics.ProcessorOptions {
	return &intrinsics.ProcessorOptions{IntrinsicHandlerOverrides: map[string]intrinsics.IntrinsicHandler{
		"Ref": func(_ string, input, template any) any {
			name := fmt.Sprint(input)
			if name == "AWS::NoValue" {
				return noValue
			}
			tpl, _ := asMap(template)
			if params, ok := asMap(tpl["Parameters"]); ok {
				if p, ok := asMap(params[name]); ok {
					t, _ := p["Type"].(string)
					if strings.HasPrefix(t, "List<") || t == "CommaDelimitedList" {
						return []any{"ref:" + name + "[0]", "ref:" + name + "[1]"}
					}
					if t == "Number" {
						return p["Default"]
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
		"Fn::If": func(_ string, input, _ any) any {
			args, ok := input.([]any)
			if !ok || len(args) != 3 {
				fail(fmt.Errorf("Fn::If %v: want [condition, then, else]", input))
				return nil
			}
			name, _ := args[0].(string)
			value, ok := conditions[name]
			if !ok {
				fail(fmt.Errorf("Fn::If on unknown condition %v", args[0]))
				return nil
			}
			if value {
				return args[1]
			}
			return args[2]
		},
	}}
}

func asMap(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	return m, ok
}

// resolve returns the template as CloudFormation would deploy it with
// StorageMode=mode and the parameter values overrides, as JSON for
// goformation's typed model: conditions evaluated, Fn::If resolved,
// AWS::NoValue removed, the resources and outputs whose condition is false
// left out; Ref, Fn::GetAtt and Fn::Sub become placeholders. The named
// exceptions to the typed check are checked and left out (see samOnly,
// templateRules and untypedResources).
func resolve(data []byte, mode string, overrides map[string]any) ([]byte, error) {
	_, typed, err := resolveTemplate(data, mode, overrides)
	return typed, err
}

// resolveTemplate returns the resolved template twice: deployed, as
// CloudFormation would deploy it (without the Rules section, which deploys
// nothing), and typed, the JSON goformation's typed model parses: deployed
// without the named exceptions.
func resolveTemplate(data []byte, mode string, overrides map[string]any) (deployed map[string]any, typed []byte, err error) {
	tpl, err := resolveDeployed(data, mode, overrides)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(tpl)
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(b, &deployed); err != nil {
		return nil, nil, err
	}
	if err := dropSAMOnly(tpl); err != nil {
		return nil, nil, err
	}
	if err := dropUntyped(tpl); err != nil {
		return nil, nil, err
	}
	typed, err = json.MarshalIndent(tpl, "", "  ")
	return deployed, typed, err
}

// resolveDeployed is resolveTemplate's deployed template.
func resolveDeployed(data []byte, mode string, overrides map[string]any) (map[string]any, error) {
	params := map[string]any{"StorageMode": mode}
	for k, v := range overrides {
		params[k] = v
	}
	conditions, err := conditionValues(data, params)
	if err != nil {
		return nil, err
	}
	var errs []error
	opts := placeholderOptions(conditions, func(err error) { errs = append(errs, err) })
	opts.ParameterOverrides = params
	processed, err := intrinsics.ProcessYAML(data, opts)
	if err != nil {
		return nil, fmt.Errorf("process intrinsics: %w", err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var tpl map[string]any
	if err := json.Unmarshal(processed, &tpl); err != nil {
		return nil, err
	}
	stripNoValue(tpl)
	// The placeholder Ref left the conditions unresolved: they are the
	// values the template is resolved with.
	if _, ok := tpl["Conditions"]; ok {
		values := map[string]any{}
		for k, v := range conditions {
			values[k] = v
		}
		tpl["Conditions"] = values
	}
	for _, section := range []string{"Resources", "Outputs"} {
		entries, _ := asMap(tpl[section])
		for name, e := range entries {
			entry, _ := asMap(e)
			c, ok := entry["Condition"]
			if !ok {
				continue
			}
			value, known := conditions[fmt.Sprint(c)]
			if !known {
				return nil, fmt.Errorf("%s %s has the unknown condition %v", section, name, c)
			}
			if !value {
				delete(entries, name)
			}
		}
	}
	dropRules(data, tpl)
	return tpl, nil
}

// samOnly are properties SAM defines but goformation's typed model lacks
// (its parse refuses them): the one exception to the round-trip check,
// each with the value it must have. HttpApi's EnableIamAuthorizer makes
// SAM define the AWS_IAM authorizer that DefaultAuthorizer names; without
// it the SAM transform rejects the template.
var samOnly = []struct {
	resource string
	path     []string
	want     any
}{
	{"HttpApi", []string{"Properties", "Auth", "EnableIamAuthorizer"}, true},
}

// dropSAMOnly checks and removes the samOnly properties.
func dropSAMOnly(tpl map[string]any) error {
	resources, _ := asMap(tpl["Resources"])
	for _, p := range samOnly {
		node, _ := asMap(resources[p.resource])
		for _, k := range p.path[:len(p.path)-1] {
			node, _ = asMap(node[k])
		}
		last := p.path[len(p.path)-1]
		if got, ok := node[last]; !ok || got != p.want {
			return fmt.Errorf("%s.%s is %v, want %v", p.resource, strings.Join(p.path, "."), got, p.want)
		}
		delete(node, last)
	}
	return nil
}

// templateRules is the template's Rules section as it must be, without
// the assertions' AssertDescription. goformation's typed model has no
// Rules (cloudformation.Template has no such field): its parse ignores the
// section without an error and its round trip drops it, so the section is,
// like samOnly, an exception to the round-trip check, with the value it
// must have. checkRules compares the raw section (resolve's intrinsic
// processing evaluates Fn::Not and Fn::Equals away) with this one, and
// each AssertDescription must name the parameters its assertion checks and
// the values its rule tests (see literals); resolve removes the section
// only when it passes (see dropRules). TestVPCParametersRule,
// TestManagedInstancesWithoutEFSRule and
// TestDeploymentsAreTheAcceptedCombinations evaluate the rules.
const templateRules = `
VPCParameters:
  RuleCondition:
    Fn::Or:
      - !Equals [!Ref StorageMode, efs]
      - !Equals [!Ref StorageMode, postgres]
      - !Equals [!Ref Compute, managed-instances]
  Assertions:
    - Assert:
        Fn::Not:
          - Fn::Contains: [!Ref SubnetIds, ""]
    - Assert: !Not [!Equals [!Ref SecurityGroupId, ""]]
ManagedInstancesWithoutEFS:
  RuleCondition: !Equals [!Ref Compute, managed-instances]
  Assertions:
    - Assert: !Not [!Equals [!Ref StorageMode, efs]]
`

// shape is the keys an object may hold, each with the shape of its value;
// a nil shape takes any value.
type shape map[string]shape

// unknown returns the paths of the keys under v that s does not know.
func (s shape) unknown(path string, v any) []string {
	if s == nil {
		return nil
	}
	m, ok := asMap(v)
	if !ok {
		return []string{fmt.Sprintf("%s is %v, not an object", path, v)}
	}
	var out []string
	for k, child := range m {
		cs, known := s[k]
		if !known {
			out = append(out, path+"."+k)
			continue
		}
		out = append(out, cs.unknown(path+"."+k, child)...)
	}
	return out
}

// resourceAttributes are the keys a resource may hold beside its
// Properties.
var resourceAttributes = shape{"Type": nil, "Condition": nil, "DependsOn": nil, "Metadata": nil, "DeletionPolicy": nil, "UpdateReplacePolicy": nil, "Properties": nil}

// untypedResources are the resource types of Lambda Managed Instances that
// goformation v7.14.9 predates (its parse fails on a type it does not
// know), with the properties SAM documents for them: an exception to the
// round-trip check like samOnly, whose shape is checked here and whose
// values TestCapacityProviderOnlyInManagedInstances checks.
// AWS::Serverless::CapacityProvider: "CapacityProviderName, VpcConfig,
// OperatorRole, Tags, PropagateTags, InstanceRequirements, ScalingConfig,
// KmsKeyArn" (SAM's resource reference, plus LoggingConfig and
// ManagedResourceTags in its newest syntax); SAM's generator reads
// SubnetIds and SecurityGroupIds, Architectures, AllowedTypes and
// ExcludedTypes, MaxVCpuCount and AverageCPUUtilization.
var untypedResources = map[string]shape{
	"AWS::Serverless::CapacityProvider": {
		"CapacityProviderName": nil,
		"VpcConfig":            {"SubnetIds": nil, "SecurityGroupIds": nil},
		"OperatorRole":         nil,
		"Tags":                 nil,
		"PropagateTags":        nil,
		"InstanceRequirements": {"Architectures": nil, "AllowedTypes": nil, "ExcludedTypes": nil},
		"ScalingConfig":        {"MaxVCpuCount": nil, "AverageCPUUtilization": nil},
		"KmsKeyArn":            nil,
		"LoggingConfig":        nil,
		"ManagedResourceTags":  nil,
	},
}

// untypedFunctionProperties are the properties of AWS::Serverless::Function
// for Lambda Managed Instances that goformation v7.14.9's typed model lacks
// (its parse refuses them), with their documented shapes: SAM's
// CapacityProviderConfig (Arn, ExecutionEnvironmentMemoryGiBPerVCpu,
// PerExecutionEnvironmentMaxConcurrency), FunctionScalingConfig
// (MinExecutionEnvironments, MaxExecutionEnvironments) and
// PublishToLatestPublished, which SAM passes to AWS::Lambda::Function. An
// exception like untypedResources; TestExecuteFunctionIsTheSingleWriter
// checks their values.
var untypedFunctionProperties = shape{
	"CapacityProviderConfig":   {"Arn": nil, "ExecutionEnvironmentMemoryGiBPerVCpu": nil, "PerExecutionEnvironmentMaxConcurrency": nil},
	"FunctionScalingConfig":    {"MinExecutionEnvironments": nil, "MaxExecutionEnvironments": nil},
	"PublishToLatestPublished": nil,
}

// dropUntyped checks the shape of the untypedResources and the
// untypedFunctionProperties of the resolved template tpl and removes them;
// the error names every key they do not know.
func dropUntyped(tpl map[string]any) error {
	resources, _ := asMap(tpl["Resources"])
	var problems []string
	for name, r := range resources {
		res, _ := asMap(r)
		typ, _ := res["Type"].(string)
		path := "Resources." + name
		if s, ok := untypedResources[typ]; ok {
			problems = append(problems, resourceAttributes.unknown(path, res)...)
			problems = append(problems, s.unknown(path+".Properties", res["Properties"])...)
			delete(resources, name)
			continue
		}
		props, _ := asMap(res["Properties"])
		if typ == "AWS::RDS::DBCluster" && props != nil {
			// Auto-pause (MinCapacity 0) is newer than goformation's model.
			if sv2, ok := asMap(props["ServerlessV2ScalingConfiguration"]); ok {
				if _, isNumber := sv2["SecondsUntilAutoPause"].(float64); !isNumber && sv2["SecondsUntilAutoPause"] != nil {
					problems = append(problems, path+".Properties.ServerlessV2ScalingConfiguration.SecondsUntilAutoPause is not a number")
				}
				delete(sv2, "SecondsUntilAutoPause")
			}
		}
		if typ != "AWS::Serverless::Function" || props == nil {
			continue
		}
		for key, s := range untypedFunctionProperties {
			if v, ok := props[key]; ok {
				problems = append(problems, s.unknown(path+".Properties."+key, v)...)
				delete(props, key)
			}
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("keys Lambda Managed Instances do not document: %s", strings.Join(problems, ", "))
	}
	return nil
}

// readRawTemplate reads the template file as rawTemplate does.
func readRawTemplate(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rawTemplate(data)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// rawTemplate returns the template as written, with the short forms of
// intrinsic functions in long form and no intrinsic function evaluated.
func rawTemplate(data []byte) (map[string]any, error) {
	j, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil, err
	}
	var tpl map[string]any
	if err := json.Unmarshal(j, &tpl); err != nil {
		return nil, err
	}
	return tpl, nil
}

// paramRefs returns the names of the parameters (not the pseudo
// parameters) that v references with Ref, sorted.
func paramRefs(v any) []string {
	names := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if name, ok := child.(string); ok && k == "Ref" && !strings.HasPrefix(name, "AWS::") {
					names[name] = true
				}
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(v)
	return slices.Sorted(maps.Keys(names))
}

// literals returns the non-empty string literals under v, an expression
// of a rule (the values it compares parameters with), sorted.
func literals(v any) []string {
	words := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if k != "Ref" {
					walk(child)
				}
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		case string:
			if v != "" {
				words[v] = true
			}
		}
	}
	walk(v)
	return slices.Sorted(maps.Keys(words))
}

// checkRules checks the raw template's Rules section against
// templateRules (see there).
func checkRules(data []byte) error {
	raw, err := rawTemplate(data)
	if err != nil {
		return err
	}
	want, err := rawTemplate([]byte(templateRules))
	if err != nil {
		return fmt.Errorf("templateRules: %w", err)
	}
	got, ok := asMap(raw["Rules"])
	if !ok {
		return fmt.Errorf("the template has no Rules section, want the rules %v", slices.Sorted(maps.Keys(want)))
	}
	// Copy before removing the descriptions.
	var stripped map[string]any
	b, err := json.Marshal(got)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &stripped); err != nil {
		return err
	}
	var problems []string
	for name, r := range stripped {
		rule, _ := asMap(r)
		asserts, _ := rule["Assertions"].([]any)
		for i, a := range asserts {
			assertion, _ := asMap(a)
			desc, _ := assertion["AssertDescription"].(string)
			delete(assertion, "AssertDescription")
			// The parameters the assertion checks, the values it wants and
			// the values that make the rule apply.
			words := slices.Concat(paramRefs(assertion["Assert"]), literals(assertion["Assert"]), literals(rule["RuleCondition"]))
			for _, p := range words {
				if !strings.Contains(desc, p) {
					problems = append(problems, fmt.Sprintf("Rules.%s.Assertions[%d].AssertDescription %q does not name %s", name, i, desc, p))
				}
			}
		}
	}
	if !reflect.DeepEqual(stripped, want) {
		g, _ := json.Marshal(stripped)
		w, _ := json.Marshal(want)
		problems = append(problems, fmt.Sprintf("Rules (without the descriptions) is %s, want %s", g, w))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// dropRules removes the Rules section from tpl, the resolved template,
// when the section of the template data is templateRules. Any other Rules
// section stays, and checkKnownProperties reports it with checkRules's
// reason, without failing every test that resolves the template; a
// missing one fails TestVPCParametersRule.
func dropRules(data []byte, tpl map[string]any) {
	if _, ok := tpl["Rules"]; ok && checkRules(data) == nil {
		delete(tpl, "Rules")
	}
}

// stripNoValue removes, under v, every object key and list element whose
// value is the noValue marker, and returns v.
func stripNoValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if child == noValue {
				delete(v, k)
				continue
			}
			v[k] = stripNoValue(child)
		}
	case []any:
		kept := v[:0]
		for _, child := range v {
			if child != noValue {
				kept = append(kept, stripNoValue(child))
			}
		}
		return kept
	}
	return v
}

// checkKnownProperties parses the template at path, resolved in each
// deployment, into goformation's typed model and fails when any key of
// the resolved template does not survive a round trip through it.
// goformation rejects unknown keys directly under a resource's Properties,
// but drops without an error those it does not know in Globals and in
// values of several possible shapes (event properties, policies). Each
// branch of an Fn::If on a condition is checked in the deployment that
// selects it. The error lists every dropped key path.
func checkKnownProperties(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var problems []string
	for _, d := range deployments {
		mode := d.String()
		resolved, err := resolve(data, d.mode, d.overrides())
		if err != nil {
			return fmt.Errorf("%s: %w", mode, err)
		}
		typed, err := goformation.ParseJSONWithOptions(resolved, &intrinsics.ProcessorOptions{NoProcess: true})
		if err != nil {
			return fmt.Errorf("%s: typed parse: %w", mode, err)
		}
		roundTrip, err := json.Marshal(typed)
		if err != nil {
			return fmt.Errorf("%s: marshal typed template: %w", mode, err)
		}
		var original, back any
		if err := json.Unmarshal(resolved, &original); err != nil {
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
			problem := mode + ": " + strings.Join(dropped, ", ")
			if slices.Contains(dropped, "Rules") {
				problem += " (Rules is not templateRules: " + fmt.Sprint(checkRules(data)) + ")"
			}
			problems = append(problems, problem)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("properties the typed template does not know (dropped by goformation): %s", strings.Join(problems, "; "))
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
	// one, at the same indentation (also when the known key opens a list
	// element). Some are in resources or Fn::If branches of one storage
	// mode only.
	cases := map[string]struct{ beside, unknown string }{
		"global property":         {"Runtime", "Runtme"},
		"efs property":            {"PerformanceMode", "PerformanceMod"},
		"access point property":   {"Path", "Paht"},
		"function property":       {"ReservedConcurrentExecutions", "ReservedConcurrency"},
		"event property":          {"Method", "Methd"},
		"efs mode branch":         {"LocalMountPath", "LocalMountPaht"},
		"litestream mode branch":  {"Size", "Sise"},
		"litestream bucket":       {"BlockPublicAcls", "BlockPublicAcl"},
		"litestream rule target":  {"Input", "Inputt"},
		"litestream rule":         {"ScheduleExpression", "Schedule"},
		"litestream rule trigger": {"Principal", "Principle"},
		// Keys of the untyped exceptions (see dropUntyped), and a function
		// property beside one of them.
		"capacity provider":         {"OperatorRole", "OperatorRol"},
		"capacity provider config":  {"ExecutionEnvironmentMemoryGiBPerVCpu", "ExecutionEnvironmentMemoryPerVCpu"},
		"function scaling config":   {"MinExecutionEnvironments", "MinimumExecutionEnvironments"},
		"managed function property": {"PublishToLatestPublished", "PublishToLatest"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			line := regexp.MustCompile(`(?m)^( +(?:- )?)` + c.beside + `: .*\n`)
			loc := line.FindSubmatchIndex(data)
			if loc == nil {
				t.Fatalf("template has no %s key to add %s beside", c.beside, c.unknown)
			}
			indent := strings.Repeat(" ", loc[3]-loc[2])
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

// parsed is the template as typed resources, resolved in one deployment
// (see resolve), with intrinsics resolved to placeholders so that
// references can be checked. raw is the resolved template as
// CloudFormation would deploy it: what goformation parsed plus the named
// exceptions (samOnly, untypedResources, untypedFunctionProperties).
type parsed struct {
	mode    string // StorageMode
	compute string // Compute
	tpl     *cloudformation.Template
	globals *global.Function
	raw     map[string]any
}

// parseTemplate parses the template with StorageMode=mode and the other
// parameters at their defaults (Compute lambda).
func parseTemplate(t *testing.T, mode string) parsed {
	t.Helper()
	return parseTemplateWith(t, mode, nil)
}

// parseDeployment parses the template in deployment d.
func parseDeployment(t *testing.T, d deployment) parsed {
	t.Helper()
	return parseTemplateWith(t, d.mode, d.overrides())
}

// parseTemplateWith parses the template with StorageMode=mode and the
// parameter values overrides.
func parseTemplateWith(t *testing.T, mode string, overrides map[string]any) parsed {
	t.Helper()
	data, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	compute := "lambda"
	if c, ok := overrides["Compute"]; ok {
		compute = fmt.Sprint(c)
	}
	deployed, resolved, err := resolveTemplate(data, mode, overrides)
	if err != nil {
		t.Fatalf("resolve %s with StorageMode=%s, Compute=%s: %v", templateFile, mode, compute, err)
	}
	tpl, err := goformation.ParseJSONWithOptions(resolved, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		t.Fatalf("parse %s with StorageMode=%s, Compute=%s: %v", templateFile, mode, compute, err)
	}
	p := parsed{mode: mode, compute: compute, tpl: tpl, raw: deployed}
	if g, ok := tpl.Globals["Function"]; ok {
		gf, ok := g.(*global.Function)
		if !ok {
			t.Fatalf("Globals.Function is %T", g)
		}
		p.globals = gf
	}
	return p
}

// eachMode runs test in a subtest per deployment, with the template
// parsed in that deployment.
func eachMode(t *testing.T, test func(t *testing.T, p parsed)) {
	t.Helper()
	for _, d := range deployments {
		t.Run(d.String(), func(t *testing.T) { test(t, parseDeployment(t, d)) })
	}
}

// executeFunction is the logical ID of the deployment's execute function.
func (p parsed) executeFunction() string {
	if p.compute == "managed-instances" {
		return "ExecuteManagedFunction"
	}
	return "ExecuteFunction"
}

// functionNames returns the functions the deployment creates, sorted.
func (p parsed) functionNames() []string {
	resources, _ := asMap(p.raw["Resources"])
	var names []string
	for name := range resources {
		if p.resource(name)["Type"] == "AWS::Serverless::Function" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// properties returns the deployed Properties of resource name, nil if
// the deployment leaves it out.
func (p parsed) properties(name string) map[string]any {
	props, _ := asMap(p.resource(name)["Properties"])
	return props
}

// resource returns the resolved resource name (its Type, Condition,
// Properties...), nil if the mode leaves it out.
func (p parsed) resource(name string) map[string]any {
	resources, _ := asMap(p.raw["Resources"])
	r, _ := asMap(resources[name])
	return r
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
	mk, err := os.ReadFile(makefile)
	if err != nil {
		t.Fatal(err)
	}
	eachMode(t, func(t *testing.T, p parsed) {
		names := p.functionNames()
		if !slices.Contains(names, p.executeFunction()) || !slices.Contains(names, "ProjectFunction") || len(names) != 2 {
			t.Errorf("functions %v, want %s and ProjectFunction", names, p.executeFunction())
		}
		for _, name := range names {
			pkg, ok := functions[name]
			if !ok {
				t.Errorf("function %s is not in the functions map (which main package does it build?)", name)
				continue
			}
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
	})
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

// managedInstancesMinMemoryMB is the smallest function Lambda Managed
// Instances run: "The minimum supported function size is 2GB and 1 vCPU"
// (AWS Lambda developer guide, Best practices for Lambda Managed
// Instances).
const managedInstancesMinMemoryMB = 2048

// TestExecuteFunctionIsTheSingleWriter checks the execute function of each
// deployment: on Compute lambda reserved concurrency 1 and nothing of
// Managed Instances; on managed-instances exactly one execution environment
// (the properties goformation lacks are read from the deployed template,
// see untypedFunctionProperties), running PerExecutionEnvironmentMaxConcurrency
// invocations, with at least the Managed Instances' minimum memory and no
// reserved concurrency.
func TestExecuteFunctionIsTheSingleWriter(t *testing.T) {
	check := func(t *testing.T, p parsed, wantConcurrency float64) {
		t.Helper()
		name := p.executeFunction()
		f := p.function(t, name)
		props := p.properties(name)
		switch {
		case p.compute == "lambda" && p.mode == "postgres":
			// PostgreSQL decides between any number of writers.
			if _, ok := props["ReservedConcurrentExecutions"]; ok || f.ReservedConcurrentExecutions != nil {
				t.Errorf("%s has ReservedConcurrentExecutions %v in postgres mode", name, props["ReservedConcurrentExecutions"])
			}
			for key := range untypedFunctionProperties {
				if v, ok := props[key]; ok {
					t.Errorf("%s has %s %v on Compute lambda", name, key, v)
				}
			}
		case p.compute == "lambda":
			if n := f.ReservedConcurrentExecutions; n == nil || *n != 1 {
				t.Errorf("%s ReservedConcurrentExecutions = %v, want 1", name, props["ReservedConcurrentExecutions"])
			}
			for key := range untypedFunctionProperties {
				if v, ok := props[key]; ok {
					t.Errorf("%s has %s %v on Compute lambda", name, key, v)
				}
			}
		case p.compute == "managed-instances":
			if _, ok := props["ReservedConcurrentExecutions"]; ok || f.ReservedConcurrentExecutions != nil {
				t.Errorf("%s has ReservedConcurrentExecutions %v: Managed Instances take none", name, props["ReservedConcurrentExecutions"])
			}
			cpc, _ := asMap(props["CapacityProviderConfig"])
			if cpc == nil {
				t.Fatalf("%s has no CapacityProviderConfig", name)
			}
			provider := strings.TrimSuffix(strings.TrimPrefix(fmt.Sprint(cpc["Arn"]), "getatt:"), ".Arn")
			if !capacityProviderTypes[fmt.Sprint(p.resource(provider)["Type"])] || cpc["Arn"] != "getatt:"+provider+".Arn" {
				t.Errorf("%s CapacityProviderConfig.Arn = %v, not the Arn of a capacity provider of the template", name, cpc["Arn"])
			}
			if got := cpc["PerExecutionEnvironmentMaxConcurrency"]; got != wantConcurrency {
				t.Errorf("%s PerExecutionEnvironmentMaxConcurrency = %v, want %v (the parameter)", name, got, wantConcurrency)
			}
			memory := float64(0)
			if f.MemorySize != nil {
				memory = float64(*f.MemorySize)
			} else if p.globals != nil && p.globals.MemorySize != nil {
				memory = float64(*p.globals.MemorySize)
			}
			if memory < managedInstancesMinMemoryMB {
				t.Errorf("%s MemorySize = %v MB, below the Managed Instances minimum of %d", name, memory, managedInstancesMinMemoryMB)
			}
			// 2, 4 or 8 GiB per vCPU, and at least one vCPU.
			if ratio, ok := cpc["ExecutionEnvironmentMemoryGiBPerVCpu"].(float64); ok &&
				(!slices.Contains([]float64{2, 4, 8}, ratio) || memory < ratio*1024) {
				t.Errorf("%s ExecutionEnvironmentMemoryGiBPerVCpu = %v with %v MB: want 2, 4 or 8 and at least one vCPU", name, ratio, memory)
			}
			if p.mode == "postgres" {
				// Any number of writers: AWS's defaults (environments in
				// several Availability Zones, scaling with the load).
				if got, ok := props["FunctionScalingConfig"]; ok {
					t.Errorf("%s FunctionScalingConfig = %v in postgres mode, want none (AWS's defaults)", name, got)
				}
			} else {
				want := map[string]any{"MinExecutionEnvironments": 1.0, "MaxExecutionEnvironments": 1.0}
				if got := props["FunctionScalingConfig"]; !reflect.DeepEqual(got, want) {
					t.Errorf("%s FunctionScalingConfig = %v, want %v: one execution environment, the single writer", name, got, want)
				}
			}
			// None, whatever the Globals give (postgres mode puts the other
			// functions in the VPC): SAM takes an intrinsic on the function,
			// Ref AWS::NoValue here, as the function's own value, which
			// replaces the global one before CloudFormation removes it.
			if got, ok := props["VpcConfig"]; ok {
				t.Errorf("%s VpcConfig = %v: a function on a capacity provider takes the provider's network", name, got)
			}
			if own := getPath(readRawTemplate(t), "Resources", name, "Properties", "VpcConfig"); !reflect.DeepEqual(own, map[string]any{"Ref": "AWS::NoValue"}) {
				t.Errorf("%s VpcConfig as written = %v, want Ref AWS::NoValue over the Globals' VpcConfig", name, own)
			}
			if got := props["PublishToLatestPublished"]; got != true {
				t.Errorf("%s PublishToLatestPublished = %v, want true (unqualified invocations run $LATEST.PUBLISHED)", name, got)
			}
		default:
			t.Fatalf("unknown Compute %q", p.compute)
		}
	}
	eachMode(t, func(t *testing.T, p parsed) { check(t, p, 64) })
	// The concurrency follows the parameter.
	d := deployment{"litestream", "managed-instances"}
	overrides := d.overrides()
	overrides["PerExecutionEnvironmentMaxConcurrency"] = 16
	check(t, parseTemplateWith(t, d.mode, overrides), 16)
}

func TestHTTPAPIUsesIAMAuthorization(t *testing.T) {
	eachMode(t, func(t *testing.T, p parsed) {
		apis := p.tpl.GetAllServerlessHttpApiResources()
		if len(apis) != 1 {
			t.Fatalf("template has %d HTTP APIs, want 1", len(apis))
		}
		for name, api := range apis {
			if api.Auth == nil || api.Auth.DefaultAuthorizer == nil || *api.Auth.DefaultAuthorizer != "AWS_IAM" {
				t.Fatalf("HTTP API %s: default authorizer is not AWS_IAM: %+v", name, api.Auth)
			}
		}
	})
}

func TestDatabasesAreOnEFSInEFSMode(t *testing.T) {
	p := parseTemplate(t, "efs")
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
	for _, name := range p.functionNames() {
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
	known := configVariables(t)
	documented := readmeVariables(t)
	for _, d := range deployments {
		p := parseDeployment(t, d)
		for _, name := range p.functionNames() {
			for v := range p.environment(p.function(t, name)) {
				if !known[v] {
					t.Errorf("%s: %s sets %s, which config.Load does not read", d, name, v)
				}
				if !documented[v] {
					t.Errorf("%s: %s sets %s, which the README's Configuration table does not document", d, name, v)
				}
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
	eachMode(t, func(t *testing.T, p parsed) {
		f := p.function(t, "ProjectFunction")
		for name, e := range f.Events {
			if e.Type == "Schedule" {
				if e.Properties == nil || e.Properties.ScheduleEvent == nil || e.Properties.ScheduleEvent.Schedule == "" {
					t.Fatalf("Schedule event %s has no schedule", name)
				}
				return
			}
		}
		t.Fatal("ProjectFunction has no Schedule event")
	})
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
	reg := handler.NewRegistry()
	bankapi.Register(reg)
	served := map[httpRoute]bool{}
	for _, path := range handler.ReadRoutes(reg) {
		served[httpRoute{http.MethodGet, path}] = true
	}
	if len(served) < 5 {
		t.Fatalf("ReadRoutes serves only %v", served)
	}
	eachMode(t, func(t *testing.T, p parsed) {
		compareRoutes(t, p.executeFunction(),
			withoutLocalOnly(templateRoutes(t, p, p.executeFunction())),
			map[httpRoute]bool{{http.MethodPost, handler.CommandRoute}: true})
		compareRoutes(t, "ProjectFunction", withoutLocalOnly(templateRoutes(t, p, "ProjectFunction")), withoutLocalOnly(served))
	})
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

func TestStorageModeParameters(t *testing.T) {
	data, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	resolved, err := resolve(data, "efs", nil)
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := goformation.ParseJSONWithOptions(resolved, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	mode, ok := tpl.Parameters["StorageMode"]
	if !ok {
		t.Fatal("template has no StorageMode parameter")
	}
	if mode.Type != "String" || mode.Default != "efs" {
		t.Errorf("StorageMode: Type %q, Default %v; want String, efs", mode.Type, mode.Default)
	}
	var allowed []string
	for _, v := range mode.AllowedValues {
		allowed = append(allowed, fmt.Sprint(v))
	}
	if !slices.Equal(allowed, storageModes) {
		t.Errorf("StorageMode AllowedValues = %v, want %v (the modes these tests resolve)", allowed, storageModes)
	}
	if mode.Description == nil || !strings.Contains(*mode.Description, "efs") || !strings.Contains(*mode.Description, "litestream") {
		t.Errorf("StorageMode's description does not explain both modes: %v", mode.Description)
	}

	size, ok := tpl.Parameters["EphemeralStorageMiB"]
	if !ok {
		t.Fatal("template has no EphemeralStorageMiB parameter")
	}
	if size.Type != "Number" || fmt.Sprint(size.Default) != "2048" {
		t.Errorf("EphemeralStorageMiB: Type %q, Default %v; want Number, 2048", size.Type, size.Default)
	}
	// Lambda's bounds of EphemeralStorage.Size.
	if size.MinValue == nil || *size.MinValue != 512 || size.MaxValue == nil || *size.MaxValue != 10240 {
		t.Errorf("EphemeralStorageMiB: MinValue %v, MaxValue %v; want 512, 10240", size.MinValue, size.MaxValue)
	}

	data, err = os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range storageModes {
		got, err := conditionValues(data, map[string]any{"StorageMode": mode})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{"UseEFS": mode == "efs", "UseLitestream": mode == "litestream"}
		for name, v := range want {
			if b, ok := got[name]; !ok || b != v {
				t.Errorf("StorageMode=%s: condition %s = %v (defined %v), want %v", mode, name, b, ok, v)
			}
		}
	}
}

// litestreamVariables are the variables whose value depends on the storage
// mode, with their values in litestream mode.
var litestreamVariables = map[string]map[string]string{
	"ExecuteFunction": {
		"EVENTCORE_DB":          "/tmp/events.db",
		"EVENTCORE_READ_DB":     "/tmp/projections.db",
		"EVENTCORE_JOURNAL":     "wal",
		"EVENTCORE_REPLICA_URL": "sub:s3://${ReplicaBucket}/events",
	},
	"ProjectFunction": {
		"EVENTCORE_DB":               "/tmp/events.db",
		"EVENTCORE_READ_DB":          "/tmp/projections.db",
		"EVENTCORE_JOURNAL":          "wal",
		"EVENTCORE_REPLICA_URL":      "sub:s3://${ReplicaBucket}/events",
		"EVENTCORE_READ_REPLICA_URL": "sub:s3://${ReplicaBucket}/read-models",
	},
}

func init() {
	litestreamVariables["ExecuteManagedFunction"] = litestreamVariables["ExecuteFunction"]
}

// efsCounterpart is the function of efs mode that plays the role of
// function name (efs mode has only Compute lambda).
func efsCounterpart(name string) string {
	if name == "ExecuteManagedFunction" {
		return "ExecuteFunction"
	}
	return name
}

func TestLitestreamModeKeepsTheDatabasesInTmp(t *testing.T) {
	efs := parseTemplate(t, "efs")
	for _, d := range deployments {
		if d.mode != "litestream" {
			continue
		}
		t.Run(d.String(), func(t *testing.T) { checkLitestreamDeployment(t, efs, parseDeployment(t, d)) })
	}
}

func checkLitestreamDeployment(t *testing.T, efs, p parsed) {
	if p.globals != nil && p.globals.VpcConfig != nil {
		t.Errorf("litestream mode: the functions are in a VPC: %+v", p.globals.VpcConfig)
	}
	for _, name := range p.functionNames() {
		t.Run(name, func(t *testing.T) {
			f := p.function(t, name)
			env := p.environment(f)
			for v, want := range litestreamVariables[name] {
				if got, ok := env[v]; !ok || got != want {
					t.Errorf("%s = %q (set %v), want %q", v, got, ok, want)
				}
			}
			if _, ok := env["EVENTCORE_READ_REPLICA_URL"]; ok && name != "ProjectFunction" {
				t.Errorf("%s sets EVENTCORE_READ_REPLICA_URL: only the project function writes the read models", name)
			}
			for v, value := range env {
				if strings.Contains(value, "/mnt") {
					t.Errorf("%s = %q: an EFS path in litestream mode", v, value)
				}
			}
			// The other variables are the same in both modes.
			efsEnv := efs.environment(efs.function(t, efsCounterpart(name)))
			for v, value := range efsEnv {
				if _, modal := litestreamVariables[name][v]; !modal && env[v] != value {
					t.Errorf("%s = %q in litestream mode, %q in efs mode", v, env[v], value)
				}
			}
			for v := range env {
				if _, modal := litestreamVariables[name][v]; !modal {
					if _, ok := efsEnv[v]; !ok {
						t.Errorf("%s is set in litestream mode only", v)
					}
				}
			}
			if len(f.FileSystemConfigs) != 0 {
				t.Errorf("FileSystemConfigs %+v in litestream mode", f.FileSystemConfigs)
			}
			if f.VpcConfig != nil {
				t.Errorf("VpcConfig %+v in litestream mode", f.VpcConfig)
			}
			if f.EphemeralStorage == nil || f.EphemeralStorage.Size != 2048 {
				t.Errorf("EphemeralStorage = %+v, want the default of EphemeralStorageMiB, 2048 MiB", f.EphemeralStorage)
			}
			if e := efs.function(t, efsCounterpart(name)).EphemeralStorage; e != nil {
				t.Errorf("EphemeralStorage %+v in efs mode, want Lambda's default", e)
			}
			efsEnvHasReplica := false
			for v := range efsEnv {
				efsEnvHasReplica = efsEnvHasReplica || strings.Contains(v, "REPLICA")
			}
			if efsEnvHasReplica {
				t.Errorf("efs mode sets a replica variable: %v", efsEnv)
			}
		})
	}
	// The size follows the parameter.
	sized := parseTemplateWith(t, "litestream", map[string]any{"Compute": p.compute, "EphemeralStorageMiB": 4096})
	for _, name := range sized.functionNames() {
		if e := sized.function(t, name).EphemeralStorage; e == nil || e.Size != 4096 {
			t.Errorf("%s: EphemeralStorage = %+v with EphemeralStorageMiB=4096", name, e)
		}
	}
}

// TestConfigAcceptsTheEnvironment loads the configuration of each function
// in each mode as the Lambda runtime would, with the bucket's name in place
// of its reference and each parameter's default in place of a reference to
// it.
func TestConfigAcceptsTheEnvironment(t *testing.T) {
	raw := readRawTemplate(t)
	params, _ := asMap(raw["Parameters"])
	eachMode(t, func(t *testing.T, p parsed) {
		for _, name := range p.functionNames() {
			env := p.environment(p.function(t, name))
			env["AWS_LAMBDA_FUNCTION_NAME"] = name
			for k, v := range env {
				if after, ok := strings.CutPrefix(v, "sub:"); ok {
					env[k] = strings.NewReplacer("${ReplicaBucket}", "example-replica-bucket",
						"${DatabaseProxy.Endpoint}", "proxy.example.com").Replace(after)
				}
				if param, ok := strings.CutPrefix(v, "ref:"); ok {
					decl, _ := asMap(params[param])
					def, ok := decl["Default"].(string)
					if !ok {
						t.Fatalf("%s: %s refers to %s, which is no parameter with a default", name, k, param)
					}
					env[k] = def
				}
			}
			c, err := config.Load(func(k string) string { return env[k] })
			if err != nil {
				t.Errorf("%s: config.Load: %v", name, err)
				continue
			}
			if replicated := c.ReplicaURL != ""; replicated != (p.mode == "litestream") {
				t.Errorf("%s: replica %q in %s mode", name, c.ReplicaURL, p.mode)
			}
			if pg := p.mode == "postgres"; c.Postgres() != pg || c.DatabaseIAMAuth != pg {
				t.Errorf("%s: PostgreSQL %v, IAM authentication %v in %s mode", name, c.Postgres(), c.DatabaseIAMAuth, p.mode)
			}
		}
	})
}

func TestReplicaBucketOnlyInLitestreamMode(t *testing.T) {
	if buckets := parseTemplate(t, "efs").tpl.GetAllS3BucketResources(); len(buckets) != 0 {
		t.Errorf("efs mode creates buckets: %v", slices.Sorted(maps.Keys(buckets)))
	}
	p := parseTemplate(t, "litestream")
	b, err := p.tpl.GetS3BucketWithName("ReplicaBucket")
	if err != nil {
		t.Fatalf("litestream mode: %v", err)
	}
	if b.AWSCloudFormationCondition != "UseLitestream" {
		t.Errorf("ReplicaBucket Condition = %q, want UseLitestream", b.AWSCloudFormationCondition)
	}
	if b.AWSCloudFormationDeletionPolicy != "Retain" || b.AWSCloudFormationUpdateReplacePolicy != "Retain" {
		t.Errorf("ReplicaBucket DeletionPolicy %q, UpdateReplacePolicy %q; want Retain (it holds the event log)",
			b.AWSCloudFormationDeletionPolicy, b.AWSCloudFormationUpdateReplacePolicy)
	}
	pab := b.PublicAccessBlockConfiguration
	isTrue := func(b *bool) bool { return b != nil && *b }
	if pab == nil || !isTrue(pab.BlockPublicAcls) || !isTrue(pab.BlockPublicPolicy) || !isTrue(pab.IgnorePublicAcls) || !isTrue(pab.RestrictPublicBuckets) {
		t.Errorf("ReplicaBucket does not block all public access: %+v", pab)
	}
	if b.BucketEncryption == nil || len(b.BucketEncryption.ServerSideEncryptionConfiguration) != 1 ||
		b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault == nil ||
		b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm != "AES256" {
		t.Errorf("ReplicaBucket's default encryption is not SSE-S3: %+v", b.BucketEncryption)
	}
	if _, ok := p.tpl.Outputs["ReplicaBucketName"]; !ok {
		t.Error("litestream mode has no ReplicaBucketName output")
	}
	if _, ok := parseTemplate(t, "efs").tpl.Outputs["ReplicaBucketName"]; ok {
		t.Error("efs mode outputs a replica bucket")
	}
}

// efsOnlyType reports whether resources of type typ exist for EFS only.
func efsOnlyType(typ string) bool {
	return strings.HasPrefix(typ, "AWS::EFS::") || strings.HasPrefix(typ, "AWS::EC2::")
}

func TestEFSResourcesOnlyInEFSMode(t *testing.T) {
	p := parseTemplate(t, "efs")
	resources, _ := asMap(p.raw["Resources"])
	var efsResources []string
	for name := range resources {
		r := p.resource(name)
		if !efsOnlyType(fmt.Sprint(r["Type"])) {
			continue
		}
		efsResources = append(efsResources, name)
		if c := r["Condition"]; c != "UseEFS" {
			t.Errorf("%s (%v) has Condition %v, want UseEFS", name, r["Type"], c)
		}
	}
	// File system, two mount targets, access point.
	if len(efsResources) < 4 {
		t.Errorf("efs mode has only the EFS resources %v", efsResources)
	}
	lp := parseTemplate(t, "litestream")
	resources, _ = asMap(lp.raw["Resources"])
	for name := range resources {
		if typ := fmt.Sprint(lp.resource(name)["Type"]); efsOnlyType(typ) {
			t.Errorf("litestream mode creates %s (%s)", name, typ)
		}
	}
	for _, name := range p.functionNames() {
		f := p.function(t, name)
		if !slices.Contains(f.AWSCloudFormationDependsOn, "MountTargetsReady") {
			t.Errorf("%s does not depend on MountTargetsReady: it may start before the mount targets exist", name)
		}
	}
	meta, _ := asMap(p.resource("MountTargetsReady")["Metadata"])
	refs := slices.Collect(maps.Values(meta))
	for name := range p.tpl.GetAllEFSMountTargetResources() {
		if !slices.Contains(refs, any("ref:"+name)) {
			t.Errorf("MountTargetsReady's metadata does not reference the mount target %s in efs mode: %v", name, meta)
		}
	}
}

func TestMaintenanceScheduleInLitestreamMode(t *testing.T) {
	const input = `{"maintenance":true}`
	eachMode(t, func(t *testing.T, p parsed) {
		execute := p.executeFunction()
		for _, name := range p.functionNames() {
			for ev, e := range p.function(t, name).Events {
				if e.Type == "Schedule" && e.Properties != nil && e.Properties.ScheduleEvent != nil &&
					e.Properties.ScheduleEvent.Input != nil && strings.Contains(*e.Properties.ScheduleEvent.Input, "maintenance") {
					t.Errorf("%s event %s sends a maintenance request in both modes", name, ev)
				}
			}
		}
		var rules []string
		for name, r := range p.tpl.GetAllEventsRuleResources() {
			for _, target := range r.Targets {
				if target.Arn != "getatt:"+execute+".Arn" {
					continue
				}
				rules = append(rules, name)
				if r.AWSCloudFormationCondition != "UseLitestream" {
					t.Errorf("rule %s: Condition %q, want UseLitestream", name, r.AWSCloudFormationCondition)
				}
				if r.ScheduleExpression == nil || *r.ScheduleExpression != "rate(1 minute)" {
					t.Errorf("rule %s: ScheduleExpression %v, want rate(1 minute)", name, r.ScheduleExpression)
				}
				if r.State != nil && *r.State != "ENABLED" {
					t.Errorf("rule %s: State %s", name, *r.State)
				}
				if target.Input == nil || *target.Input != input {
					t.Errorf("rule %s: Input %v, want %s", name, target.Input, input)
				}
				permitted := false
				for pn, perm := range p.tpl.GetAllLambdaPermissionResources() {
					if perm.SourceArn == nil || *perm.SourceArn != "getatt:"+name+".Arn" {
						continue
					}
					permitted = perm.Action == "lambda:InvokeFunction" && perm.Principal == "events.amazonaws.com" &&
						(perm.FunctionName == "ref:"+execute || perm.FunctionName == "getatt:"+execute+".Arn")
					if perm.AWSCloudFormationCondition != "UseLitestream" {
						t.Errorf("permission %s: Condition %q, want UseLitestream", pn, perm.AWSCloudFormationCondition)
					}
				}
				if !permitted {
					t.Errorf("rule %s may not invoke %s: no matching AWS::Lambda::Permission", name, execute)
				}
			}
		}
		want := 0
		if p.mode == "litestream" {
			want = 1
		}
		if len(rules) != want {
			t.Errorf("%d rules invoke %s (%v), want %d", len(rules), execute, rules, want)
		}
	})
}

func TestProjectReservedConcurrencyOnlyInLitestreamMode(t *testing.T) {
	eachMode(t, func(t *testing.T, p parsed) {
		n := p.function(t, "ProjectFunction").ReservedConcurrentExecutions
		switch {
		case p.mode == "litestream" && (n == nil || *n != 1):
			t.Errorf("ReservedConcurrentExecutions = %v, want 1: the single writer of the replicated read models", n)
		case p.mode == "efs" && n != nil:
			t.Errorf("ReservedConcurrentExecutions = %d, want none: reads scale out on EFS", *n)
		}
	})
}

// grants are the actions of a function's policy: action, resource, and the
// s3:prefix values a condition limits the statement to.
type grant struct{ action, resource, prefixes string }

func (p parsed) grants(t *testing.T, name string) map[grant]bool {
	t.Helper()
	f := p.function(t, name)
	if f.Policies == nil || f.Policies.IAMPolicyDocument == nil {
		t.Fatalf("%s: Policies is not one policy document: %+v", name, f.Policies)
	}
	list := func(v any) []string {
		switch v := v.(type) {
		case []any:
			s := make([]string, len(v))
			for i, e := range v {
				s[i] = fmt.Sprint(e)
			}
			return s
		case nil:
			return nil
		default:
			return []string{fmt.Sprint(v)}
		}
	}
	out := map[grant]bool{}
	for _, st := range f.Policies.IAMPolicyDocument.Statement {
		s, _ := asMap(st)
		if s["Effect"] != "Allow" {
			t.Errorf("%s: statement %v is not an Allow", name, s)
			continue
		}
		var prefixes []string
		if cond, ok := asMap(s["Condition"]); ok {
			for op, c := range cond {
				m, _ := asMap(c)
				for key, v := range m {
					if key == "s3:prefix" {
						if op != "StringLike" {
							t.Errorf("%s: s3:prefix under %s, want StringLike", name, op)
						}
						prefixes = append(prefixes, list(v)...)
					}
				}
			}
		}
		sort.Strings(prefixes)
		for _, a := range list(s["Action"]) {
			for _, r := range list(s["Resource"]) {
				out[grant{a, r, strings.Join(prefixes, " ")}] = true
			}
		}
	}
	return out
}

func TestReplicaPermissions(t *testing.T) {
	const bucket = "getatt:ReplicaBucket.Arn"
	objects := func(prefix string) string { return "sub:arn:${AWS::Partition}:s3:::${ReplicaBucket}/" + prefix + "/*" }
	rw := func(prefix string) []grant {
		return []grant{{"s3:GetObject", objects(prefix), ""}, {"s3:PutObject", objects(prefix), ""}, {"s3:DeleteObject", objects(prefix), ""}}
	}
	want := map[string][]grant{
		"ExecuteFunction": append(rw("events"),
			grant{"s3:ListBucket", bucket, "events/*"},
			grant{"s3:GetBucketLocation", bucket, ""}),
		"ProjectFunction": append(rw("read-models"),
			grant{"s3:GetObject", objects("events"), ""},
			grant{"s3:ListBucket", bucket, "events/* read-models/*"},
			grant{"s3:GetBucketLocation", bucket, ""}),
	}
	want["ExecuteManagedFunction"] = want["ExecuteFunction"]
	for _, d := range deployments {
		if d.mode != "litestream" {
			continue
		}
		p := parseDeployment(t, d)
		for _, name := range p.functionNames() {
			grants, ok := want[name]
			if !ok {
				t.Errorf("%s: no grants expected for %s", d, name)
			}
			got := p.grants(t, name)
			for _, g := range grants {
				if !got[g] {
					t.Errorf("%s: %s may not %s on %s (prefixes %q)", d, name, g.action, g.resource, g.prefixes)
				}
				delete(got, g)
			}
			for g := range got {
				t.Errorf("%s: %s may also %s on %s (prefixes %q)", d, name, g.action, g.resource, g.prefixes)
			}
		}
	}
	efs := parseTemplate(t, "efs")
	for _, name := range efs.functionNames() {
		for g := range efs.grants(t, name) {
			if !strings.HasPrefix(g.action, "elasticfilesystem:") {
				t.Errorf("efs mode: %s may %s on %s", name, g.action, g.resource)
			}
		}
	}
}

// TestReferencesExistInEachMode checks that, in each mode, every Ref,
// Fn::GetAtt, Fn::Sub variable and DependsOn names a parameter, a pseudo
// parameter or a resource the mode creates: CloudFormation rejects a
// template that references a resource its conditions leave out, outside
// the branch of an Fn::If that excludes it.
func TestReferencesExistInEachMode(t *testing.T) {
	eachMode(t, func(t *testing.T, p parsed) {
		resources, _ := asMap(p.raw["Resources"])
		params, _ := asMap(p.raw["Parameters"])
		exists := func(name string) bool {
			name, _, _ = strings.Cut(name, "[")
			name, _, _ = strings.Cut(name, ".")
			_, r := resources[name]
			_, q := params[name]
			return r || q || strings.HasPrefix(name, "AWS::")
		}
		eachString("", p.raw, func(path, v string) {
			for _, n := range referencedNames(v) {
				if !exists(n) {
					t.Errorf("%s references %s, which %s does not create", path, n, deployment{p.mode, p.compute})
				}
			}
		})
		for name := range resources {
			var deps []string
			switch d := p.resource(name)["DependsOn"].(type) {
			case string:
				deps = []string{d}
			case []any:
				for _, e := range d {
					deps = append(deps, fmt.Sprint(e))
				}
			}
			for _, d := range deps {
				if _, ok := resources[d]; !ok {
					t.Errorf("%s depends on %s, which %s does not create", name, d, deployment{p.mode, p.compute})
				}
			}
		}
	})
}

// vpcParameters are the parameters only efs mode and Compute
// managed-instances use, with their CloudFormation types: plain types with
// empty defaults, so that a litestream deployment on Compute lambda needs
// no VPC (the AWS-specific types List<AWS::EC2::Subnet::Id> and
// AWS::EC2::SecurityGroup::Id accept no empty value). The rule
// VPCParameters requires them in efs mode and with managed-instances.
var vpcParameters = map[string]string{
	"SubnetIds":       "CommaDelimitedList",
	"SecurityGroupId": "String",
}

func TestVPCParametersAreOptional(t *testing.T) {
	eachMode(t, func(t *testing.T, p parsed) {
		for name, typ := range vpcParameters {
			param, ok := p.tpl.Parameters[name]
			if !ok {
				t.Errorf("template has no %s parameter", name)
				continue
			}
			// Default is "" only when the template sets it (nil otherwise).
			if param.Type != typ || param.Default != "" {
				t.Errorf("%s: Type %q, Default %#v; want %s, \"\" (litestream mode must not need it)", name, param.Type, param.Default, typ)
			}
			desc := ""
			if param.Description != nil {
				desc = strings.ToLower(*param.Description)
			}
			for _, want := range []string{"required in efs mode", "managed-instances", "unused in litestream mode"} {
				if !strings.Contains(desc, want) {
					t.Errorf("%s's description %q does not say %q", name, desc, want)
				}
			}
		}
	})
}

// evalRule evaluates expr, a rule's condition or assertion, with the
// rule functions the template uses and the parameter values params (the
// others at their defaults; one without a default is an error). A list
// parameter is its value split on commas, as CloudFormation does: an
// empty one is the list [""].
func evalRule(expr any, parameters map[string]any, params map[string]string) (any, error) {
	switch e := expr.(type) {
	case string:
		return e, nil
	case []any:
		out := make([]any, len(e))
		for i, x := range e {
			v, err := evalRule(x, parameters, params)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case map[string]any:
		if len(e) != 1 {
			return nil, fmt.Errorf("%v is not a function", e)
		}
		for fn, arg := range e {
			if fn == "Ref" {
				name := fmt.Sprint(arg)
				decl, ok := asMap(parameters[name])
				if !ok {
					return nil, fmt.Errorf("Ref to %s, which is not a parameter", name)
				}
				value, ok := params[name]
				if !ok {
					def, ok := decl["Default"]
					if !ok {
						return nil, fmt.Errorf("parameter %s has no default: every deployment must give it", name)
					}
					value = fmt.Sprint(def)
				}
				if typ := fmt.Sprint(decl["Type"]); typ == "CommaDelimitedList" || strings.HasPrefix(typ, "List<") {
					var list []any
					for _, s := range strings.Split(value, ",") {
						list = append(list, strings.TrimSpace(s))
					}
					return list, nil
				}
				return value, nil
			}
			v, err := evalRule(arg, parameters, params)
			if err != nil {
				return nil, err
			}
			args, _ := v.([]any)
			bools := func(n int) ([]bool, error) {
				if n >= 0 && len(args) != n {
					return nil, fmt.Errorf("%s takes %d arguments: %v", fn, n, args)
				}
				out := make([]bool, len(args))
				for i, a := range args {
					b, ok := a.(bool)
					if !ok {
						return nil, fmt.Errorf("%s: argument %v is not a condition", fn, a)
					}
					out[i] = b
				}
				return out, nil
			}
			switch fn {
			case "Fn::Equals":
				if len(args) != 2 {
					return nil, fmt.Errorf("Fn::Equals takes 2 arguments: %v", args)
				}
				return reflect.DeepEqual(args[0], args[1]), nil
			case "Fn::Contains":
				list, ok := args[0].([]any)
				if len(args) != 2 || !ok {
					return nil, fmt.Errorf("Fn::Contains takes a list and a string: %v", args)
				}
				return slices.Contains(list, args[1]), nil
			case "Fn::Not":
				b, err := bools(1)
				if err != nil {
					return nil, err
				}
				return !b[0], nil
			case "Fn::And", "Fn::Or":
				b, err := bools(-1)
				if err != nil {
					return nil, err
				}
				if fn == "Fn::And" {
					return !slices.Contains(b, false), nil
				}
				return slices.Contains(b, true), nil
			default:
				return nil, fmt.Errorf("evalRule does not know %s", fn)
			}
		}
	}
	return nil, fmt.Errorf("cannot evaluate %#v", expr)
}

// failedAssertions evaluates the template's rule with the parameter values
// params (the others at their defaults): whether its condition applies it,
// and the parameters of the assertions that fail.
func failedAssertions(t *testing.T, raw map[string]any, rule string, params map[string]string) (applies bool, failed []string) {
	t.Helper()
	parameters, _ := asMap(raw["Parameters"])
	rules, _ := asMap(raw["Rules"])
	r, ok := asMap(rules[rule])
	if !ok {
		t.Fatalf("template has no rule %s", rule)
	}
	cond, err := evalRule(r["RuleCondition"], parameters, params)
	if err != nil {
		t.Fatalf("%s RuleCondition: %v", rule, err)
	}
	if cond != true {
		return false, nil
	}
	asserts, _ := r["Assertions"].([]any)
	for i, a := range asserts {
		assertion, _ := asMap(a)
		ok, err := evalRule(assertion["Assert"], parameters, params)
		if err != nil {
			t.Fatalf("%s Assertions[%d] with %v: %v", rule, i, params, err)
		}
		if ok != true {
			failed = append(failed, paramRefs(assertion["Assert"])...)
		}
	}
	sort.Strings(failed)
	return true, failed
}

// TestVPCParametersRule checks, on the template as written (the typed
// model has no Rules, see templateRules), that a deployment in efs mode or
// on Compute managed-instances fails without subnets or security group,
// and that one in litestream mode on Compute lambda needs neither.
func TestVPCParametersRule(t *testing.T) {
	data, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkRules(data); err != nil {
		t.Error(err)
	}
	raw, err := rawTemplate(data)
	if err != nil {
		t.Fatal(err)
	}
	const rule = "VPCParameters"
	rules, _ := asMap(raw["Rules"])
	r, ok := asMap(rules[rule])
	if !ok {
		t.Fatalf("template has no rule %s: an efs or managed-instances deployment without subnets or security group would not be refused", rule)
	}
	wantCond := map[string]any{"Fn::Or": []any{
		map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "StorageMode"}, "efs"}},
		map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "StorageMode"}, "postgres"}},
		map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "Compute"}, "managed-instances"}},
	}}
	if !reflect.DeepEqual(r["RuleCondition"], wantCond) {
		t.Errorf("%s RuleCondition = %v, want %v", rule, r["RuleCondition"], wantCond)
	}
	const subnets, sg = "subnet-0a1,subnet-0b2", "sg-0c3"
	managed := func(params map[string]string) map[string]string {
		out := map[string]string{"StorageMode": "litestream", "Compute": "managed-instances"}
		maps.Copy(out, params)
		return out
	}
	cases := []struct {
		name    string
		params  map[string]string
		applies bool
		failed  []string
	}{
		{"efs without VPC parameters", map[string]string{"StorageMode": "efs"}, true, []string{"SecurityGroupId", "SubnetIds"}},
		{"efs without security group", map[string]string{"StorageMode": "efs", "SubnetIds": subnets}, true, []string{"SecurityGroupId"}},
		{"efs without subnets", map[string]string{"StorageMode": "efs", "SecurityGroupId": sg}, true, []string{"SubnetIds"}},
		{"efs with an empty subnet", map[string]string{"StorageMode": "efs", "SubnetIds": "subnet-0a1,", "SecurityGroupId": sg}, true, []string{"SubnetIds"}},
		{"efs with VPC parameters", map[string]string{"StorageMode": "efs", "SubnetIds": subnets, "SecurityGroupId": sg}, true, nil},
		{"default mode without VPC parameters", nil, true, []string{"SecurityGroupId", "SubnetIds"}},
		{"litestream without VPC parameters", map[string]string{"StorageMode": "litestream"}, false, nil},
		{"litestream with VPC parameters", map[string]string{"StorageMode": "litestream", "SubnetIds": subnets, "SecurityGroupId": sg}, false, nil},
		{"managed-instances without VPC parameters", managed(nil), true, []string{"SecurityGroupId", "SubnetIds"}},
		{"managed-instances without security group", managed(map[string]string{"SubnetIds": subnets}), true, []string{"SecurityGroupId"}},
		{"managed-instances without subnets", managed(map[string]string{"SecurityGroupId": sg}), true, []string{"SubnetIds"}},
		{"managed-instances with an empty subnet", managed(map[string]string{"SubnetIds": ",subnet-0b2", "SecurityGroupId": sg}), true, []string{"SubnetIds"}},
		{"managed-instances with VPC parameters", managed(map[string]string{"SubnetIds": subnets, "SecurityGroupId": sg}), true, nil},
		{"managed-instances in efs mode with VPC parameters", map[string]string{"Compute": "managed-instances", "SubnetIds": subnets, "SecurityGroupId": sg}, true, nil},
	}
	for _, c := range cases {
		applies, failed := failedAssertions(t, raw, rule, c.params)
		if applies != c.applies || !slices.Equal(failed, c.failed) {
			t.Errorf("%s: rule applies %v, fails on %v; want applies %v, fails on %v", c.name, applies, failed, c.applies, c.failed)
		}
	}
}

// TestManagedInstancesWithoutEFSRule checks that the template refuses
// Compute managed-instances in efs mode (see the rule's comment in the
// template) and accepts it in litestream and postgres modes.
func TestManagedInstancesWithoutEFSRule(t *testing.T) {
	raw := readRawTemplate(t)
	const rule = "ManagedInstancesWithoutEFS"
	cases := []struct {
		name    string
		params  map[string]string
		applies bool
		failed  []string
	}{
		{"managed-instances in efs mode", map[string]string{"Compute": "managed-instances", "StorageMode": "efs"}, true, []string{"StorageMode"}},
		{"managed-instances in the default mode", map[string]string{"Compute": "managed-instances"}, true, []string{"StorageMode"}},
		{"managed-instances in litestream mode", map[string]string{"Compute": "managed-instances", "StorageMode": "litestream"}, true, nil},
		{"managed-instances in postgres mode", map[string]string{"Compute": "managed-instances", "StorageMode": "postgres"}, true, nil},
		{"lambda in efs mode", map[string]string{"Compute": "lambda", "StorageMode": "efs"}, false, nil},
		{"defaults", nil, false, nil},
	}
	for _, c := range cases {
		applies, failed := failedAssertions(t, raw, rule, c.params)
		if applies != c.applies || !slices.Equal(failed, c.failed) {
			t.Errorf("%s: rule applies %v, fails on %v; want applies %v, fails on %v", c.name, applies, failed, c.applies, c.failed)
		}
	}
}

// TestDeploymentsAreTheAcceptedCombinations checks that deployments, the
// combinations every other test resolves the template in, are exactly the
// combinations of StorageMode and Compute (their AllowedValues) that the
// template's rules accept when the VPC parameters are given.
func TestDeploymentsAreTheAcceptedCombinations(t *testing.T) {
	raw := readRawTemplate(t)
	parameters, _ := asMap(raw["Parameters"])
	allowed := func(name string) []string {
		p, _ := asMap(parameters[name])
		values, _ := p["AllowedValues"].([]any)
		var out []string
		for _, v := range values {
			out = append(out, fmt.Sprint(v))
		}
		return out
	}
	if got := allowed("StorageMode"); !slices.Equal(got, storageModes) {
		t.Errorf("StorageMode AllowedValues = %v, want %v", got, storageModes)
	}
	if got := allowed("Compute"); !slices.Equal(got, computes) {
		t.Errorf("Compute AllowedValues = %v, want %v", got, computes)
	}
	rules, _ := asMap(raw["Rules"])
	var accepted []deployment
	for _, mode := range allowed("StorageMode") {
		for _, compute := range allowed("Compute") {
			params := map[string]string{"StorageMode": mode, "Compute": compute, "SubnetIds": "subnet-0a1,subnet-0b2", "SecurityGroupId": "sg-0c3"}
			ok := true
			for _, rule := range slices.Sorted(maps.Keys(rules)) {
				if _, failed := failedAssertions(t, raw, rule, params); len(failed) > 0 {
					ok = false
				}
			}
			if ok {
				accepted = append(accepted, deployment{mode, compute})
			}
		}
	}
	if !slices.Equal(accepted, deployments) {
		t.Errorf("the rules accept %v, the tests resolve %v", accepted, deployments)
	}
}

// vpcParameterRefs returns the places of the resolved template raw that
// reference a VPC parameter, with the placeholder they hold.
func vpcParameterRefs(raw map[string]any) map[string]string {
	refs := map[string]string{}
	eachString("", raw, func(path, v string) {
		for _, n := range referencedNames(v) {
			n, _, _ = strings.Cut(n, "[")
			if _, ok := vpcParameters[n]; ok {
				refs[path] = v
			}
		}
	})
	return refs
}

// subVar is a variable of an Fn::Sub string.
var subVar = regexp.MustCompile(`\$\{([^}!]+)\}`)

// referencedNames returns what a resolved placeholder string references:
// the target of a Ref or Fn::GetAtt, or the variables of an Fn::Sub
// (names may carry a list index or an attribute after the name).
func referencedNames(v string) []string {
	if n, ok := strings.CutPrefix(v, "ref:"); ok {
		return []string{n}
	}
	if n, ok := strings.CutPrefix(v, "getatt:"); ok {
		return []string{n}
	}
	var names []string
	if sub, ok := strings.CutPrefix(v, "sub:"); ok {
		for _, m := range subVar.FindAllStringSubmatch(sub, -1) {
			names = append(names, m[1])
		}
	}
	return names
}

// eachString calls fn with every string under v and its path
// (.Key.Key[i]...).
func eachString(path string, v any, fn func(path, s string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			eachString(path+"."+k, child, fn)
		}
	case []any:
		for i, child := range v {
			eachString(fmt.Sprintf("%s[%d]", path, i), child, fn)
		}
	case string:
		fn(path, v)
	}
}

// capacityProviderVPC is where the capacity provider references the VPC
// parameters: its instances, in both subnets.
var capacityProviderVPC = map[string]string{
	".Resources.ExecuteCapacityProvider.Properties.VpcConfig.SubnetIds[0]":        "ref:SubnetIds[0]",
	".Resources.ExecuteCapacityProvider.Properties.VpcConfig.SubnetIds[1]":        "ref:SubnetIds[1]",
	".Resources.ExecuteCapacityProvider.Properties.VpcConfig.SecurityGroupIds[0]": "ref:SecurityGroupId",
}

// TestVPCParametersUsedOnlyInTheVPC checks where the resolved template
// references the VPC parameters: in efs mode the functions' VPC
// configuration and the two mount targets (in the first and the second
// subnet); with Compute managed-instances the capacity provider (its
// instances, in both subnets; the functions themselves have no VPC
// configuration); in litestream mode with Compute lambda nowhere (the
// rules, which reference them in every deployment, are not part of the
// resolved template, see templateRules).
func TestVPCParametersUsedOnlyInTheVPC(t *testing.T) {
	want := map[string]map[string]string{
		"efs": {
			".Globals.Function.VpcConfig.SubnetIds[0]":             "ref:SubnetIds[0]",
			".Globals.Function.VpcConfig.SubnetIds[1]":             "ref:SubnetIds[1]",
			".Globals.Function.VpcConfig.SecurityGroupIds[0]":      "ref:SecurityGroupId",
			".Resources.MountTargetA.Properties.SubnetId":          "ref:SubnetIds[0]",
			".Resources.MountTargetA.Properties.SecurityGroups[0]": "ref:SecurityGroupId",
			".Resources.MountTargetB.Properties.SubnetId":          "ref:SubnetIds[1]",
			".Resources.MountTargetB.Properties.SecurityGroups[0]": "ref:SecurityGroupId",
		},
		"litestream": {},
		"postgres": {
			".Globals.Function.VpcConfig.SubnetIds[0]":                     "ref:SubnetIds[0]",
			".Globals.Function.VpcConfig.SubnetIds[1]":                     "ref:SubnetIds[1]",
			".Globals.Function.VpcConfig.SecurityGroupIds[0]":              "ref:SecurityGroupId",
			".Resources.DatabaseSubnetGroup.Properties.SubnetIds[0]":       "ref:SubnetIds[0]",
			".Resources.DatabaseSubnetGroup.Properties.SubnetIds[1]":       "ref:SubnetIds[1]",
			".Resources.DatabaseCluster.Properties.VpcSecurityGroupIds[0]": "ref:SecurityGroupId",
			".Resources.DatabaseProxy.Properties.VpcSubnetIds[0]":          "ref:SubnetIds[0]",
			".Resources.DatabaseProxy.Properties.VpcSubnetIds[1]":          "ref:SubnetIds[1]",
			".Resources.DatabaseProxy.Properties.VpcSecurityGroupIds[0]":   "ref:SecurityGroupId",
		},
		"litestream+managed-instances": capacityProviderVPC,
	}
	// Postgres with Managed Instances: the project function (Globals), the
	// database and the capacity provider; the managed execute function
	// itself takes its network from the capacity provider.
	want["postgres+managed-instances"] = maps.Clone(want["postgres"])
	maps.Copy(want["postgres+managed-instances"], capacityProviderVPC)
	eachMode(t, func(t *testing.T, p parsed) {
		d := deployment{p.mode, p.compute}.String()
		wanted, ok := want[d]
		if !ok {
			t.Fatalf("no expectation for deployment %s", d)
		}
		got := vpcParameterRefs(p.raw)
		for path, v := range wanted {
			if got[path] != v {
				t.Errorf("%s is %q, want %q", path, got[path], v)
			}
		}
		for path, v := range got {
			if _, ok := wanted[path]; !ok {
				t.Errorf("%s references a VPC parameter (%s) in %s", path, v, d)
			}
		}
	})
}

// capacityProviderTypes are the resource types of a Lambda capacity
// provider: SAM's and CloudFormation's.
var capacityProviderTypes = map[string]bool{
	"AWS::Serverless::CapacityProvider": true,
	"AWS::Lambda::CapacityProvider":     true,
}

// operatorPolicy is AWS's managed policy for the role Lambda assumes to
// manage a capacity provider's instances.
const operatorPolicy = "sub:arn:${AWS::Partition}:iam::aws:policy/AWSLambdaManagedEC2ResourceOperator"

func TestComputeParameters(t *testing.T) {
	p := parseTemplate(t, "litestream")
	compute, ok := p.tpl.Parameters["Compute"]
	if !ok {
		t.Fatal("template has no Compute parameter")
	}
	var allowed []string
	for _, v := range compute.AllowedValues {
		allowed = append(allowed, fmt.Sprint(v))
	}
	if compute.Type != "String" || compute.Default != "lambda" || !slices.Equal(allowed, computes) {
		t.Errorf("Compute: Type %q, Default %v, AllowedValues %v; want String, lambda, %v", compute.Type, compute.Default, allowed, computes)
	}
	if compute.Description == nil || !strings.Contains(*compute.Description, "lambda") || !strings.Contains(*compute.Description, "managed-instances") {
		t.Errorf("Compute's description does not explain both computes: %v", compute.Description)
	}
	concurrency, ok := p.tpl.Parameters["PerExecutionEnvironmentMaxConcurrency"]
	if !ok {
		t.Fatal("template has no PerExecutionEnvironmentMaxConcurrency parameter")
	}
	// Lambda's bounds of PerExecutionEnvironmentMaxConcurrency: 1 to 1600.
	if concurrency.Type != "Number" || fmt.Sprint(concurrency.Default) != "64" ||
		concurrency.MinValue == nil || *concurrency.MinValue != 1 || concurrency.MaxValue == nil || *concurrency.MaxValue != 1600 {
		t.Errorf("PerExecutionEnvironmentMaxConcurrency: Type %q, Default %v, MinValue %v, MaxValue %v; want Number, 64, 1, 1600",
			concurrency.Type, concurrency.Default, concurrency.MinValue, concurrency.MaxValue)
	}
	data, err := os.ReadFile(templateFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range computes {
		got, err := conditionValues(data, map[string]any{"Compute": c})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{"UseLambdaCompute": c == "lambda", "UseManagedInstances": c == "managed-instances"}
		for name, v := range want {
			if b, ok := got[name]; !ok || b != v {
				t.Errorf("Compute=%s: condition %s = %v (defined %v), want %v", c, name, b, ok, v)
			}
		}
	}
}

// TestCapacityProviderOnlyInManagedInstances checks, on the deployed
// template (goformation knows no capacity provider, see untypedResources),
// that only Compute managed-instances creates a capacity provider: for
// arm64 instances in the subnets and the security group of the VPC
// parameters, managed by a role Lambda may assume that has AWS's operator
// policy.
func TestCapacityProviderOnlyInManagedInstances(t *testing.T) {
	eachMode(t, func(t *testing.T, p parsed) {
		resources, _ := asMap(p.raw["Resources"])
		var providers, operatorRoles []string
		for _, name := range slices.Sorted(maps.Keys(resources)) {
			if capacityProviderTypes[fmt.Sprint(p.resource(name)["Type"])] {
				providers = append(providers, name)
			}
		}
		for name, role := range p.tpl.GetAllIAMRoleResources() {
			if slices.Contains(role.ManagedPolicyArns, operatorPolicy) {
				operatorRoles = append(operatorRoles, name)
			}
		}
		if p.compute != "managed-instances" {
			if len(providers) > 0 || len(operatorRoles) > 0 {
				t.Errorf("Compute %s creates the capacity providers %v and operator roles %v", p.compute, providers, operatorRoles)
			}
			return
		}
		if len(providers) != 1 {
			t.Fatalf("capacity providers %v, want one", providers)
		}
		name := providers[0]
		if c := p.resource(name)["Condition"]; c != "UseManagedInstances" {
			t.Errorf("%s Condition = %v, want UseManagedInstances", name, c)
		}
		props := p.properties(name)
		if got, want := getPath(props, "InstanceRequirements", "Architectures"), []any{"arm64"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s InstanceRequirements.Architectures = %v, want %v (the bootstraps are built for arm64)", name, got, want)
		}
		if got, want := getPath(props, "VpcConfig", "SubnetIds"), []any{"ref:SubnetIds[0]", "ref:SubnetIds[1]"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s VpcConfig.SubnetIds = %v, want the SubnetIds parameter %v", name, got, want)
		}
		if got, want := getPath(props, "VpcConfig", "SecurityGroupIds"), []any{"ref:SecurityGroupId"}; !reflect.DeepEqual(got, want) {
			t.Errorf("%s VpcConfig.SecurityGroupIds = %v, want the SecurityGroupId parameter %v", name, got, want)
		}
		if len(operatorRoles) != 1 {
			t.Fatalf("roles with %s: %v, want one", operatorPolicy, operatorRoles)
		}
		roleName := operatorRoles[0]
		if got := props["OperatorRole"]; got != "getatt:"+roleName+".Arn" {
			t.Errorf("%s OperatorRole = %v, want the operator role %s", name, got, roleName)
		}
		role, err := p.tpl.GetIAMRoleWithName(roleName)
		if err != nil {
			t.Fatal(err)
		}
		if role.AWSCloudFormationCondition != "UseManagedInstances" {
			t.Errorf("%s Condition = %q, want UseManagedInstances", roleName, role.AWSCloudFormationCondition)
		}
		trust, _ := asMap(role.AssumeRolePolicyDocument)
		statements, _ := trust["Statement"].([]any)
		trusted := false
		for _, st := range statements {
			s, _ := asMap(st)
			trusted = trusted || (s["Effect"] == "Allow" && s["Action"] == "sts:AssumeRole" &&
				reflect.DeepEqual(s["Principal"], map[string]any{"Service": "lambda.amazonaws.com"}))
		}
		if !trusted || len(statements) != 1 {
			t.Errorf("%s trust policy %v: want lambda.amazonaws.com alone allowed to assume it", roleName, trust)
		}
		if len(role.ManagedPolicyArns) != 1 || len(role.Policies) != 0 {
			t.Errorf("%s has the policies %v and %d inline: want %s alone", roleName, role.ManagedPolicyArns, len(role.Policies), operatorPolicy)
		}
	})
}

// getPath returns the value at keys under v, nil if there is none.
func getPath(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := asMap(v)
		v = m[k]
	}
	return v
}

// TestManagedExecuteFunctionMatchesTheLambdaOne checks that the two
// execute functions (one logical function per Compute, see the template)
// differ only where Lambda Managed Instances need it: everything else
// (code, environment, storage, policies, events) is the same in litestream
// and in postgres mode, so that one cannot drift from the other.
func TestManagedExecuteFunctionMatchesTheLambdaOne(t *testing.T) {
	for _, mode := range []string{"litestream", "postgres"} {
		t.Run(mode, func(t *testing.T) { testManagedMatchesLambda(t, mode) })
	}
}

func testManagedMatchesLambda(t *testing.T, mode string) {
	lambda := parseDeployment(t, deployment{mode, "lambda"})
	managed := parseDeployment(t, deployment{mode, "managed-instances"})
	// Litestream: the single writer, reserved to one on Lambda and pinned
	// to one environment on Managed Instances. Postgres: neither.
	onlyLambda := []string{"ReservedConcurrentExecutions"}
	onlyManaged := append(slices.Sorted(maps.Keys(untypedFunctionProperties)), "MemorySize")
	if mode == "postgres" {
		onlyLambda = nil
		onlyManaged = slices.DeleteFunc(onlyManaged, func(k string) bool { return k == "FunctionScalingConfig" })
	}
	differ := []string{"Description"}
	copyProps := func(p parsed, name string) map[string]any {
		props := p.properties(name)
		if props == nil {
			t.Fatalf("%s: no function %s", deployment{p.mode, p.compute}, name)
		}
		out := maps.Clone(props)
		for _, k := range differ {
			delete(out, k)
		}
		return out
	}
	l, m := copyProps(lambda, "ExecuteFunction"), copyProps(managed, "ExecuteManagedFunction")
	for _, k := range onlyLambda {
		if _, ok := l[k]; !ok {
			t.Errorf("ExecuteFunction has no %s", k)
		}
		if _, ok := m[k]; ok {
			t.Errorf("ExecuteManagedFunction has %s", k)
		}
		delete(l, k)
	}
	for _, k := range onlyManaged {
		if _, ok := m[k]; !ok {
			t.Errorf("ExecuteManagedFunction has no %s", k)
		}
		if _, ok := l[k]; ok {
			t.Errorf("ExecuteFunction has %s", k)
		}
		delete(m, k)
	}
	for _, k := range slices.Sorted(maps.Keys(l)) {
		if !reflect.DeepEqual(l[k], m[k]) {
			t.Errorf("%s differs: ExecuteFunction %v, ExecuteManagedFunction %v", k, l[k], m[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if _, ok := l[k]; !ok {
			t.Errorf("ExecuteManagedFunction has %s = %v, ExecuteFunction has none", k, m[k])
		}
	}
	for _, attr := range []string{"Metadata", "DependsOn"} {
		if got, want := managed.resource("ExecuteManagedFunction")[attr], lambda.resource("ExecuteFunction")[attr]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ExecuteManagedFunction %v, ExecuteFunction %v", attr, got, want)
		}
	}
}

// TestCommandRouteTargetsTheExecuteFunction checks the one route written
// into the HTTP API's definition (see the template): POST /commands/{name}
// integrates the execute function of the deployment's Compute, and that
// function also has it as an HttpApi event, which gives the API its invoke
// permission. Every other route comes from the functions' events.
func TestCommandRouteTargetsTheExecuteFunction(t *testing.T) {
	eachMode(t, func(t *testing.T, p parsed) {
		body, _ := asMap(p.properties("HttpApi")["DefinitionBody"])
		if body == nil {
			t.Fatal("HttpApi has no DefinitionBody")
		}
		paths, _ := asMap(body["paths"])
		if got := slices.Sorted(maps.Keys(paths)); !slices.Equal(got, []string{handler.CommandRoute}) {
			t.Errorf("DefinitionBody paths %v, want only %s (the others come from events)", got, handler.CommandRoute)
		}
		methods, _ := asMap(paths[handler.CommandRoute])
		if got := slices.Sorted(maps.Keys(methods)); !slices.Equal(got, []string{"post"}) {
			t.Errorf("%s methods %v, want post", handler.CommandRoute, got)
		}
		integration, _ := asMap(getPath(methods, "post", "x-amazon-apigateway-integration"))
		execute := p.executeFunction()
		want := map[string]any{
			"type":                 "aws_proxy",
			"httpMethod":           "POST",
			"payloadFormatVersion": "2.0",
			"uri":                  "sub:arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${" + execute + ".Arn}/invocations",
		}
		if !reflect.DeepEqual(integration, want) {
			t.Errorf("%s integration = %v, want %v", handler.CommandRoute, integration, want)
		}
		route := httpRoute{http.MethodPost, handler.CommandRoute}
		for _, name := range p.functionNames() {
			if has := templateRoutes(t, p, name)[route]; has != (name == execute) {
				t.Errorf("%s has the event %s: %v, want %v", name, route, has, name == execute)
			}
		}
	})
}
