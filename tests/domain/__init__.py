"""Domain tests: the spec, plan and selection rules, migrations and the object stores."""
