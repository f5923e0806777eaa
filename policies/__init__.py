"""The default llmos policy set (Rego). A package only so that installs carry the .rego files."""
