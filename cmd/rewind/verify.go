package main

type verifyCmd struct {
	Spec   string `arg:"" optional:"" help:"VOLUME or VOLUME@WHEN: report what touches it (the scrub checks the whole store)." placeholder:"VOLUME[@WHEN]"`
	Repair bool   `help:"Rewrite what parity rebuilds, and missing parity."`
}

func (c *verifyCmd) Run(e *env) error { return scrub(e, c.Spec, c.Repair) }
