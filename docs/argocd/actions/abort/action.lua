-- ModelRollout action abort: roll back now: the candidate's weight goes to 0.
-- Only the action annotation is written, never the spec: Git stays the source of
-- truth, and the operator applies the action once and removes the annotation.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rollouts.mlops.io/action"] = "abort"
return obj
