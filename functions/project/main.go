// Command project is the project Lambda function (binary bootstrap): on a
// schedule it catches the bank example's projections up; over API Gateway
// HTTP API it answers the read routes. It reads the event log and owns the
// read-model database.
package main

import (
	"fmt"
	"os"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
)

func main() {
	pick := func(a *app.App) app.InvokeFunc { return a.Project.Invoke }
	if err := app.RunLambda(app.RoleProject, bankapi.Register, pick); err != nil {
		fmt.Fprintln(os.Stderr, "project: "+err.Error())
		os.Exit(1)
	}
}
