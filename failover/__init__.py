"""BFM, the HEMISPHERE Backbone Failover Module: the failover controller."""
