"""`make soak`: steady light load on a local stack for a while, the resident memory of every
process of the stack sampled, and its growth per hour reported."""
