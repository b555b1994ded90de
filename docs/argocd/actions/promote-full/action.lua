-- ModelRollout action promote-full: skip to the last stage (100%); the candidate's readiness is still checked.
-- Only the action annotation is written, never the spec: Git stays the source of
-- truth, and the operator applies the action once and removes the annotation.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["rollouts.mlops.io/action"] = "promote-full"
return obj
