package metricstest_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/eventcore-go/eventcore/metrics/metricstest"
)

// TestStartPushgatewayStartsEmpty starts two gateways one after the other:
// the second must not hold the group pushed to the first.
func TestStartPushgatewayStartsEmpty(t *testing.T) {
	for i := range 2 {
		t.Run(fmt.Sprint("gateway ", i+1), func(t *testing.T) {
			url := metricstest.StartPushgateway(t)
			families, err := metricstest.Families(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			if groups := families["push_time_seconds"].GetMetric(); len(groups) != 0 {
				t.Fatalf("a new gateway holds %d groups, such as %v", len(groups), groups[0].GetLabel())
			}
			req, err := http.NewRequest(http.MethodPut, url+"/metrics/job/leftover/instance/i", strings.NewReader("leftover_total 1\n"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("push answered %s", resp.Status)
			}
		})
	}
}
