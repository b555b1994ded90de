-- ModelRollout action pause: hold the rollout at its current weight.
-- Only the action annotation is written, never the spec: Git stays the source of
-- truth, and the operator applies the action once and removes the annotation.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rollouts.mlops.io/action"] = "pause"
return obj
