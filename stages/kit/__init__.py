"""The stage kit: the JSON contract, metrics, samples, naming and the child-process helpers every wing shares."""
