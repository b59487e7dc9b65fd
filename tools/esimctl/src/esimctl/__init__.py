"""esimctl: the operator CLI of the eSIM renewal platform."""
